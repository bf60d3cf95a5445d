"""DNS rebinding and cross-site requests: state-changing requests must name this server in
``Host`` and, when a browser sends ``Origin``, come from this server's own origin.

A page on ``http://evil.example`` whose name an attacker rebinds to 127.0.0.1 sends
``Host: evil.example`` and ``Origin: http://evil.example``; both are refused (403) on every
method but GET, HEAD and OPTIONS, before routing or authentication, predictions included.

Allowed host names: the loopback names (a rebinding page cannot make a browser send them), the
host the server is bound to, the names in ``app.state.server_hosts`` (the in-process test
server adds its own) and ``MLE_ALLOWED_HOSTS`` (``*`` allows any). A server bound to all
interfaces (``0.0.0.0``, ``::``) without ``MLE_ALLOWED_HOSTS`` accepts any name: set it to the
names clients use.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_INTERFACE = frozenset({"0.0.0.0", "::", ""})


def _hostname(value: str) -> str:
    """``example.com:8080`` → ``example.com``; ``[::1]:80`` → ``::1``."""
    return (urlsplit(f"//{value}").hostname or "").lower()


class HostGuard:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    def allowed(self) -> frozenset[str] | None:
        """The allowed host names, or None for any."""
        configured = getattr(self.state.settings, "allowed_hosts", None) or ()
        if "*" in configured:
            return None
        bound: set[str] = getattr(self.state, "server_hosts", set())
        if not configured and any(h in ANY_INTERFACE for h in bound):
            return None
        names = {h.lower().strip("[]") for h in (*bound, *configured)} - ANY_INTERFACE
        return LOOPBACK | frozenset(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        allowed = self.allowed()
        if allowed is not None:
            raw_host, origin = _host_and_origin(scope.get("headers", ()))
            if _hostname(raw_host) not in allowed:
                await _refuse(send, f"Host {raw_host!r} does not name this server "
                                    "(MLE_ALLOWED_HOSTS lists the names it answers to)")
                return
            if origin is not None and origin != "null" and _hostname(urlsplit(origin).netloc) not in allowed:
                await _refuse(send, f"Requests from the web page at {origin} are not allowed")
                return
            if origin == "null":
                await _refuse(send, "Requests from an opaque origin are not allowed")
                return
        await self.app(scope, receive, send)


def _host_and_origin(headers: Any) -> tuple[str, str | None]:
    """``Host`` and ``Origin`` of an ASGI header list (ASGI lower-cases names), nothing else
    decoded: this runs on every prediction."""
    host, origin = "", None
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
    return host, origin


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
