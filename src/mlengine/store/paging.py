"""Page sizes and opaque page tokens shared by every list call of the store."""

from __future__ import annotations

import base64

from mlengine.errors import invalid

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def encode_token(kind: str, value: str | int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(kind: str, token: str) -> str:
    """The value of a token made by :func:`encode_token` for ``kind``; 400 otherwise."""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        found, value = text.split(":", 1)
    except (ValueError, UnicodeDecodeError):
        raise invalid("pageToken", "is not a token returned by a previous list call") from None
    if found != kind:
        raise invalid("pageToken", "is not a token returned by a previous list call")
    return value


def page_size(requested: int | None) -> int:
    if requested is not None and requested < 0:
        raise invalid("pageSize", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def decode_id_token(kind: str, token: str) -> int:
    """Like :func:`decode_token` for tokens that carry a row id."""
    value = decode_token(kind, token)
    if not value.isdigit():
        raise invalid("pageToken", "is not a token returned by a previous list call")
    return int(value)
