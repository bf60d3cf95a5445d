"""The authenticated reverse proxy in front of services: HTTP and websockets under
``/v1/projects/P/services/N/proxy/``.

Contract
--------
- Authentication, in this order: ``Authorization: Bearer TOKEN``; the ``mle_token`` cookie;
  for a browser's first visit, ``GET <prefix>...?access_token=TOKEN``, answered with a
  ``303`` to the same URL without ``access_token`` that sets ``mle_token`` (HttpOnly,
  SameSite=Strict, ``Path=<prefix>``, Secure over https), so every later request of that tab
  (websockets included) carries it. The token needs ``mlengine.services.use`` on the project
  (IAM: roles/ml.developer or above). Unauthenticated: 401 in the Google error shape, before anything is looked up.
  Being SameSite=Strict, the cookie is not sent on a navigation that starts on another site:
  paste the ``access_token`` link in the address bar (or reload once).
- Readiness: a RUNNING service is forwarded to at once. A STARTING one, or one the manager
  stopped for idleness (which the request starts again), is waited for up to
  ``MLE_SERVICE_PROXY_WAIT`` seconds; still not RUNNING then: 503 UNAVAILABLE with
  ``Retry-After``. A service stopped with ``:stop`` or FAILED: 400 FAILED_PRECONDITION (only
  ``:start`` brings it back); unknown or being deleted: 404.
- Forwarding: the path and query go to the service unchanged (its server serves the prefix);
  request and response bodies are streamed both ways; the status and headers pass through
  except hop-by-hop ones; ``Host`` is kept, ``X-Forwarded-For/-Proto/-Host/-Prefix`` are set.
  mlengine's credential (the bearer header or the cookie) is removed; the service's own
  cookies and ``Authorization`` schemes pass, except headers the kind names in
  :meth:`~mlengine.services.ServiceKind.upstream_headers`: those are the proxy's own (the
  secret that lets only the proxy reach the process), set on every request and websocket
  handshake, and a client's headers of those names are dropped. A ``Location`` pointing at the service's own
  address is made relative; ``Set-Cookie`` of ``mle_token`` from a service is dropped.
- Websockets: authenticated and readied the same way (a refusal is an HTTP response when the
  server supports the ASGI denial extension, else a close before accept); the client's
  subprotocols, ``Origin`` and cookies go to the service; text and binary messages are relayed
  both ways until either side closes.
- Activity: every request, and every websocket while open, counts as use of the service
  (:meth:`mlengine.services.manager.Instance.begin_request`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from mlengine.errors import Code, MLEngineError, failed_precondition, not_found
from mlengine.services import states as st
from mlengine.services._base import proxy_prefix
from mlengine.store.services import service_name

if TYPE_CHECKING:
    import httpx

    from mlengine.services.manager import Instance, ServiceManager

log = logging.getLogger("mlengine.services.proxy")

PERMISSION = "mlengine.services.use"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
COOKIE = "mle_token"
TOKEN_QUERY = "access_token"
RETRY_AFTER_SECONDS = 2
MAX_WEBSOCKET_MESSAGE = 16 * 1024 * 1024
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection"})
_WEBSOCKET_OWN = (b"sec-websocket-", b"host", b"origin", b"user-agent")
_COOKIE_SAFE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
_SET_BY_US = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix"})

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]
#: ``(app, token, project, permission) -> None`` (allowed) or the error to answer (401/403): the
#: API layer's token lookup and IAM check, handed in by the API.
Check = Callable[[Any, str, str, str], "MLEngineError | None"]


class ProxyEndpoint:
    """The ASGI app of the proxy routes (HTTP and websocket). Tokens are looked up in the
    API's ``check`` (token cache and IAM); the manager is ``app.state.services``."""

    def __init__(self, check: Check) -> None:
        self.check = check

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await _handle_websocket(self, scope, receive, send)
        else:
            await _handle_http(self, scope, receive, send)


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


def _json(error: MLEngineError) -> bytes:
    return json.dumps(error.to_dict()).encode()


# Authentication --------------------------------------------------------------------------------
def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


def _cookie_token(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            name, _, content = part.strip().partition("=")
            if name == COOKIE and content:
                return content  # browsers send the most specific path first
    return None


def _query_token(scope: Scope) -> tuple[str, str] | None:
    """``(token, the query without it)`` when the query holds ``access_token``."""
    query = scope.get("query_string", b"").decode("latin-1")
    token = None
    kept = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        if unquote(key) == TOKEN_QUERY:
            token = unquote(value)
        else:
            kept.append(part)
    return (token, "&".join(kept)) if token else None


def _credential(scope: Scope) -> tuple[str, str] | None:
    """``(token, source)`` with source ``header``, ``cookie`` or ``query``."""
    scheme, _, token = (_header(scope, b"authorization") or b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "header"
    if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
        query = _query_token(scope)  # before the cookie: a fresh link replaces a stale cookie
        if query:
            return query[0], "query"
    cookie = _cookie_token(scope)
    if cookie:
        return cookie, "cookie"
    return None


def _authorize(endpoint: ProxyEndpoint, scope: Scope, credential: tuple[str, str] | None,
               project: str) -> MLEngineError | None:
    if credential is None:
        return MLEngineError(
            Code.UNAUTHENTICATED,
            "Request is missing a valid bearer token (header 'Authorization: Bearer TOKEN'; in a browser, "
            f"open the service's URL once with ?{TOKEN_QUERY}=TOKEN; get one with `mle auth print-access-token`).")
    return endpoint.check(scope["app"], credential[0], project, PERMISSION)


# Readiness -------------------------------------------------------------------------------------
async def _ready(manager: ServiceManager, project: str, name: str) -> tuple[Instance, int] | MLEngineError:
    """The instance and its port once RUNNING, or the error to answer (see the contract)."""
    from starlette.concurrency import run_in_threadpool

    full = service_name(project, name)
    deadline = time.monotonic() + manager.settings.service_proxy_wait_seconds
    woken = False
    while True:
        inst = manager.lookup(project, name)
        if inst is None or inst.state == st.DELETING:
            return not_found(f"Service {full}")
        state, port = inst.state, inst.port
        if state == st.RUNNING and port is not None:
            return inst, port
        if state == st.FAILED:
            return failed_precondition(f"Service {full} FAILED: {inst.row.error} Start it again with "
                                       f"POST /v1/{full}:start.")
        if state == st.STOPPED:
            if inst.row.stop_reason != st.StopReason.IDLE.value:
                return failed_precondition(f"Service {full} was stopped; start it with POST /v1/{full}:start.")
            if not woken:
                woken = True
                await run_in_threadpool(manager.wake_idle, inst)
                continue
        if time.monotonic() >= deadline:
            return MLEngineError(Code.UNAVAILABLE, f"Service {full} is {state}; try again in a few seconds.")
        await asyncio.sleep(0.1)


# HTTP --------------------------------------------------------------------------------------------
async def _send_error(send: Any, error: MLEngineError, extra: Headers | None = None) -> None:
    body = _json(error)
    headers: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.code is Code.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b"Bearer"))
    if error.code is Code.UNAVAILABLE:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    headers += extra or []
    await send({"type": "http.response.start", "status": error.code.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _manager(scope: Scope) -> ServiceManager | None:
    return getattr(scope["app"].state, "services", None)


async def _handle_http(endpoint: ProxyEndpoint, scope: Scope, receive: Any, send: Any) -> None:
    params = scope.get("path_params", {})
    project, name = str(params.get("project", "")), str(params.get("name", ""))
    credential = _credential(scope)
    denied = _authorize(endpoint, scope, credential, project)
    if denied is not None:
        await _send_error(send, denied)
        return
    if credential is None:  # _authorize refused it already
        return
    manager = _manager(scope)
    if manager is None:
        await _send_error(send, MLEngineError(Code.UNAVAILABLE, "Services are not enabled on this server."))
        return
    prefix = proxy_prefix(project, name)
    if credential[1] == "query":
        await _set_cookie_and_redirect(scope, send, credential[0], prefix)
        return
    ready = await _ready(manager, project, name)
    if isinstance(ready, MLEngineError):
        await _send_error(send, ready)
        return
    inst, port = ready
    inst.begin_request()
    try:
        await _forward(scope, receive, send, port, credential[1], prefix, inst.upstream)
    finally:
        inst.end_request()


async def _set_cookie_and_redirect(scope: Scope, send: Any, token: str, prefix: str) -> None:
    if not _COOKIE_SAFE.match(token):
        await _send_error(send, MLEngineError(Code.INVALID_ARGUMENT, f"Field: {TOKEN_QUERY} Error: this token "
                                              "cannot be kept in a cookie; send it as a bearer header"))
        return
    _, rest = _query_token(scope) or ("", "")
    location = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1") + (f"?{rest}" if rest else "")
    cookie = f"{COOKIE}={token}; Path={prefix}; HttpOnly; SameSite=Strict"
    if scope.get("scheme") in ("https", "wss"):
        cookie += "; Secure"
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
        (b"cache-control", b"no-store"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _request_headers(scope: Scope, source: str, prefix: str,
                     upstream: Mapping[str, str] | None = None) -> tuple[Headers, bytes | None]:
    """Headers to send to the service (with the kind's ``upstream`` headers, never the
    client's of those names), and the original ``Host``."""
    listed = {t.strip().lower().encode() for t in (_header(scope, b"connection") or b"").decode("latin-1").split(",")}
    own = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (upstream or {}).items()]
    replaced = {k for k, _ in own}
    out: Headers = []
    host = None
    forwarded_for = b""
    for key, value in scope["headers"]:
        if key in replaced:
            continue
        if key in HOP_BY_HOP or key in listed or key in _SET_BY_US:
            if key == b"x-forwarded-for":
                forwarded_for = value + b", "
            continue
        if key == b"authorization" and source == "header":
            continue
        if key == b"cookie":
            kept = [p for p in value.split(b";") if p.strip().partition(b"=")[0] != COOKIE.encode()]
            value = b";".join(kept).strip()
            if not value:
                continue
        if key == b"host":
            host = value
        out.append((key, value))
    client = scope.get("client")
    proto = b"https" if scope.get("scheme") in ("https", "wss") else b"http"
    out += [(b"x-forwarded-for", forwarded_for + (client[0] if client else "").encode()),
            (b"x-forwarded-proto", proto), (b"x-forwarded-prefix", prefix.rstrip("/").encode())]
    if host is not None:
        out.append((b"x-forwarded-host", host))
    return out + own, host


def _response_headers(raw: Headers, port: int) -> Headers:
    listed: set[bytes] = set()
    for key, value in raw:
        if key.lower() == b"connection":
            listed |= {t.strip().lower() for t in value.split(b",")}
    own = f"http://127.0.0.1:{port}".encode()
    out: Headers = []
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP or name in listed:
            continue
        if name == b"location" and value.startswith(own):
            value = value[len(own):] or b"/"
        if name == b"set-cookie" and value.strip().startswith(COOKIE.encode() + b"="):
            continue
        out.append((name, value))
    return out


_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    """One pooled client per event loop (the server has one; in-process tests may have more)."""
    import httpx

    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None or client.is_closed:
        client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                   timeout=httpx.Timeout(connect=10.0, read=None, write=None, pool=10.0))
        _clients.clear()  # a client of a finished loop cannot be used again
        _clients[id(loop)] = client
    return client


async def close_clients() -> None:
    """Close the pooled client (server shutdown)."""
    for client in list(_clients.values()):
        with contextlib.suppress(Exception):
            await client.aclose()
    _clients.clear()


async def _forward(scope: Scope, receive: Any, send: Any, port: int, source: str, prefix: str,
                   upstream: Mapping[str, str]) -> None:
    import httpx

    headers, _host = _request_headers(scope, source, prefix, upstream)
    if not any(k == b"accept-encoding" for k, _ in headers):
        headers.append((b"accept-encoding", b"identity"))  # never let the client add one
    streamed = any(k == b"transfer-encoding" for k, _ in scope["headers"])
    if streamed:
        headers.append((b"transfer-encoding", b"chunked"))
    length = _header(scope, b"content-length")
    has_body = streamed or (length is not None and length.strip() not in (b"", b"0"))

    async def body() -> Any:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    url = httpx.URL(scheme="http", host="127.0.0.1", port=port, raw_path=raw_path + (b"?" + query if query else b""))
    client = _client()
    request = client.build_request(scope["method"], url, headers=headers, content=body() if has_body else None)
    try:
        response = await client.send(request, stream=True)
    except _ClientGone:
        return
    except httpx.HTTPError as exc:
        await _send_error(send, MLEngineError(Code.UNAVAILABLE, f"The service did not answer: {type(exc).__name__} "
                                              f"{exc}".strip()))
        return
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": _response_headers(list(response.headers.raw), port)})

        async def pump() -> None:
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                log.info("proxying %s: the service's response broke off: %s", scope["path"], exc)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(disconnected())
        done, pending = await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if pumping in done:
            pumping.result()
    finally:
        await response.aclose()


# Websockets --------------------------------------------------------------------------------------
async def _deny(scope: Scope, send: Any, error: MLEngineError) -> None:
    """Refuse a websocket handshake: an HTTP response if the server can send one, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _json(error)
        headers: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if error.code is Code.UNAVAILABLE:
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        await send({"type": "websocket.http.response.start", "status": error.code.http_status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


async def _handle_websocket(endpoint: ProxyEndpoint, scope: Scope, receive: Any, send: Any) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    if (await receive())["type"] != "websocket.connect":
        return
    params = scope.get("path_params", {})
    project, name = str(params.get("project", "")), str(params.get("name", ""))
    credential = _credential(scope)
    denied = _authorize(endpoint, scope, credential, project)
    if denied is not None:
        await _deny(scope, send, denied)
        return
    if credential is None:  # _authorize refused it already
        return
    manager = _manager(scope)
    if manager is None:
        await _deny(scope, send, MLEngineError(Code.UNAVAILABLE, "Services are not enabled on this server."))
        return
    prefix = proxy_prefix(project, name)
    ready = await _ready(manager, project, name)
    if isinstance(ready, MLEngineError):
        await _deny(scope, send, ready)
        return
    inst, port = ready
    headers, host = _request_headers(scope, credential[1], prefix, inst.upstream)
    extra = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if not k.startswith(_WEBSOCKET_OWN)]
    origin = _header(scope, b"origin")
    agent = _header(scope, b"user-agent")
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    target = raw_path + (f"?{query}" if query else "")
    inst.begin_request()
    try:
        try:
            upstream = await connect(
                f"ws://{(host or b'').decode('latin-1') or f'127.0.0.1:{port}'}{target}", host="127.0.0.1",
                port=port, origin=origin.decode("latin-1") if origin else None,  # type: ignore[arg-type]
                subprotocols=scope.get("subprotocols") or None, additional_headers=extra,
                user_agent_header=agent.decode("latin-1") if agent else None, proxy=None, compression=None,
                ping_interval=None, max_size=MAX_WEBSOCKET_MESSAGE, open_timeout=10)
        except InvalidStatus as exc:
            status = exc.response.status_code
            await _deny(scope, send, MLEngineError(
                Code.PERMISSION_DENIED if status == 403 else Code.NOT_FOUND if status == 404 else Code.UNAVAILABLE,
                f"The service refused the websocket with HTTP {status}."))
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            await _deny(scope, send, MLEngineError(Code.UNAVAILABLE, f"The service did not accept the websocket: "
                                                   f"{type(exc).__name__} {exc}".strip()))
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay(receive, send, upstream)
    finally:
        inst.end_request()


async def _relay(receive: Any, send: Any, upstream: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=_sendable(message.get("code")))
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    async def from_service() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": _sendable(upstream.close_code),
                        "reason": upstream.close_reason or ""})

    tasks = {asyncio.ensure_future(from_client()), asyncio.ensure_future(from_service())}
    _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
            await task


def _sendable(code: int | None) -> int:
    """A close code that may be sent in a close frame (1005/1006 are reserved)."""
    if code is None or code == 1005:
        return 1000
    if code == 1006:
        return 1011
    return int(code)
