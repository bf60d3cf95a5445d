"""The server log as JSON lines with request ids (``MLE_LOG_FORMAT=json``).

- :class:`RequestIds` (ASGI middleware, installed only with ``MLE_LOG_FORMAT=json``, so the
  default predict path pays nothing): every HTTP request gets an id, the caller's
  ``X-Request-Id`` when it is a plain token (letters, digits, ``.``, ``_``, ``-``; at most 128),
  else a new random one; it is answered in ``X-Request-Id``, is ``requestId`` on every log
  line written while the request runs (threads the handler hands work to included: the id is
  a context variable), and ends in one access line (method, path, status, milliseconds).
- :class:`JsonFormatter`: one JSON object a line: ``time`` (RFC 3339, UTC), ``level``,
  ``logger``, ``message``, ``requestId`` when there is one, ``exception`` with the traceback.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("mle_request_id", default=None)
HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
access_log = logging.getLogger("mlengine.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            line["requestId"] = request_id
        for key in ("method", "path", "status", "durationMs"):
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_json_logging(level: str = "info") -> None:
    """Route every logger (uvicorn's included, when it is given no log config) to stderr as
    JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO) if level != "trace" else logging.DEBUG)


class RequestIds:
    """ASGI middleware: a request id per HTTP request and an access line (module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == HEADER), None)
        request_id = given.decode() if given is not None and _VALID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info("%s %s %d", scope.get("method"), scope.get("path"), status, extra={
                "method": scope.get("method"), "path": scope.get("path"), "status": status,
                "durationMs": round((time.perf_counter() - started) * 1000, 3)})
            REQUEST_ID.reset(token)
