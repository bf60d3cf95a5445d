"""Reading request bodies: size-limited before buffering, JSON errors in the Google shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from mlengine.errors import Code, MLEngineError

DEFAULT_JSON_LIMIT = 10 * 1024 * 1024
#: Deepest nesting of arrays and objects a request body may have (ml v1 bodies need < 10).
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, computed without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


async def limited_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise MLEngineError(
            Code.PAYLOAD_TOO_LARGE, f"Request body of {declared} bytes exceeds the limit of {limit} bytes"
        )
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise MLEngineError(Code.PAYLOAD_TOO_LARGE, f"Request body exceeds the limit of {limit} bytes")
        yield chunk


async def read_json(request: Request, limit: int = DEFAULT_JSON_LIMIT, required: bool = True) -> Any:
    data = b"".join([chunk async for chunk in limited_chunks(request, limit)])
    if not data.strip():
        if required:
            raise MLEngineError(Code.INVALID_ARGUMENT, "Invalid JSON payload received: the body is empty")
        return {}
    try:
        value = json.loads(data)
    except RecursionError:
        value = None
        too_deep = True
    except (ValueError, UnicodeDecodeError) as exc:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Invalid JSON payload received: {exc}") from None
    else:
        too_deep = json_depth(value) > MAX_JSON_DEPTH
    if too_deep:
        raise MLEngineError(Code.INVALID_ARGUMENT, "Invalid JSON payload received: arrays and objects are "
                            f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value
