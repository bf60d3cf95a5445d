"""Who a console request speaks for (its session cookie), and the checks on state changes.

The cookie holds a random secret (the database keeps its digest). A session signed in with a
token lives only as long as the token; one signed in with a password as long as the user.
A state-changing request (any method but GET/HEAD) must name this server as its ``Origin``
(or, without one, its ``Referer``) and carry the session's CSRF token (form field ``csrf`` or
header ``X-CSRF-Token``): SameSite=Strict already keeps the cookie off cross-site requests;
the token also stops a same-site page (another port of this host) from acting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mlengine.core.iam import Identity
from mlengine.errors import Code, MLEngineError, invalid
from mlengine.store.console import ConsoleSessions
from mlengine.store.tokens import TOKEN_PREFIX

COOKIE = "mle_session"
SIGNIN_COOKIE = "mle_signin"  # double-submit token of the sign-in form (no session yet)
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM = 64 * 1024


@dataclass(frozen=True)
class Viewer:
    """A signed-in browser: its identity (as a token's) and its session's CSRF token."""

    identity: Identity
    csrf: str
    secret: str
    session_id: int = 0

    @property
    def label(self) -> str:
        return self.identity.member.partition(":")[2] or self.identity.member


def sessions(request: Request) -> ConsoleSessions:
    return request.app.state.sessions


def main_state(request: Request) -> Any:
    return request.app.state.main


async def current_viewer(request: Request) -> Viewer | None:
    """The session's viewer, or None (no cookie, unknown, expired, or its token revoked)."""
    secret = request.cookies.get(COOKIE, "")
    if not secret:
        return None
    row = await run_in_threadpool(sessions(request).find, secret)
    if row is None:
        return None
    if row.token_name is not None:
        identity = main_state(request).tokens.named(row.token_name)
        if identity is None or identity.member != row.principal:  # the token was revoked: so is the session
            await run_in_threadpool(sessions(request).end, secret)
            await run_in_threadpool(drop_proxy_tokens, request, [row.id])
            return None
    else:
        identity = Identity(f"console:{row.user_name}", row.principal, tuple(row.groups or ()))
    return Viewer(identity, row.csrf_token, secret, row.id)


def proxy_token_name(session_id: int) -> str:
    """The token a session gets to reach services through the proxy (TensorBoard), which
    authenticates by token: it speaks for the session's principal and ends with the session."""
    return f"console-session-{session_id}"


def mint_proxy_token(request: Request, viewer: Viewer) -> str:
    """The session's proxy token, one for every service the session opens (opening a notebook
    must not sign an open TensorBoard tab out): derived from the session's cookie secret (which
    only this browser has; the database keeps neither), created when missing."""
    state = main_state(request)
    name = proxy_token_name(viewer.session_id)
    mac = hmac.new(viewer.secret.encode(), b"mlengine console proxy token", hashlib.sha256).digest()
    secret = TOKEN_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    found = state.tokens.lookup(secret)
    if found is not None and found.name == name:
        return secret
    state.token_repo.discard(name)
    try:
        state.token_repo.create(name, viewer.identity.member, viewer.identity.groups, token=secret)
    except MLEngineError as error:  # a concurrent open of this session made it first
        if error.code is not Code.ALREADY_EXISTS:
            raise
    state.tokens.refresh()
    return secret


def drop_proxy_tokens(request: Request, session_ids: list[int]) -> None:
    state = main_state(request)
    if any([state.token_repo.discard(proxy_token_name(i)) for i in session_ids]):
        state.tokens.refresh()


def same_origin(request: Request) -> bool:
    """Whether the request's Origin (else Referer) is this server as the browser reached it."""
    source = request.headers.get("origin")
    if source is None or source == "null":
        referer = request.headers.get("referer")
        if source == "null" or not referer:
            return False
        parts = urlsplit(referer)
        source = f"{parts.scheme}://{parts.netloc}"
    host = request.headers.get("host", "")
    return bool(host) and source.lower() == f"{request.url.scheme}://{host}".lower()


async def check_state_change(request: Request, expected_csrf: str) -> None:
    """Refuse (403) a state change from another origin or without the expected CSRF token."""
    if not same_origin(request):
        raise MLEngineError(Code.PERMISSION_DENIED, "Cross-origin request refused (Origin is not this server)")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await read_form(request)).get(CSRF_FIELD)
    if not sent or not expected_csrf or not hmac.compare_digest(sent.encode(), expected_csrf.encode()):
        raise MLEngineError(Code.PERMISSION_DENIED, "Missing or wrong CSRF token (reload the page and try again)")


async def read_form(request: Request) -> dict[str, str]:
    """The console's forms (urlencoded, small): field → first value; anything else is empty."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()  # Starlette keeps it: the guard and the handler both read it
    if len(body) > MAX_FORM:
        raise invalid("form", f"is larger than {MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise invalid("form", "has more than 64 fields") from None
    return {key: values[0] for key, values in fields.items()}


def set_cookie(response: Any, request: Request, name: str, value: str, max_age: int | None, path: str) -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
