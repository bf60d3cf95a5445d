"""The predict route, as a plain ASGI handler in front of FastAPI (the hot path).

``POST /v1/projects/{p}/models/{m}[/versions/{v}]:predict`` is answered here without FastAPI's
routing, dependency injection or Request objects: parse the path, check the bearer token with
the :data:`Authorizer` the api layer hands in (IAM permission ``ml.models.predict`` on the
model, from the same in-memory token and permission caches as every other route), refuse
non-JSON content types, read the body under the size limit (``Content-Length`` checked before
reading, chunked bodies counted as they arrive; 413 either way), resolve the version in the
serving manager's in-memory table (a call on the model's name asks the model's
:class:`~mlengine.prediction.traffic.TrafficPolicy`, with the call's routing key when the policy
is sticky) and forward the raw body to a replica. The replica's answer is written back as is,
with ``X-MLE-Version`` naming the version that answered. Shadow versions get a copy of the
body at the same time; their answers are compared with the served one after the response went
out (:meth:`TrafficPolicy.record_mirror`), never returned.

Authentication errors use the Google error shape like every route; everything after that uses
prediction's flat ``{"error": "message"}``. :class:`PredictMiddleware` is installed by
``create_app``; the same handler is also registered as the routes' endpoint, so the routes are
enumerable (permission test) and work even without the middleware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from mlengine.core import metrics
from mlengine.prediction import jsonio
from mlengine.prediction.pool import Result, error_result
from mlengine.prediction.traffic import VERSION_HEADER, TrafficPolicy

ROUTING_HEADER = b"x-mle-routing-key"

log = logging.getLogger("mlengine.serving")
PERMISSION = "ml.models.predict"
SUFFIX = ":predict"
_JSON_TYPES = (b"application/json", b"text/plain", b"application/x-www-form-urlencoded")

Scope = dict[str, Any]
#: ``authorize(app, authorization header, (project, model, version or None))``: None to go on,
#: or the ``(status, body, headers)`` to answer (401/403 in the Google error shape). Must not
#: block: it runs on every request.
Authorizer = Callable[[Any, "bytes | None", "tuple[str, str, str | None]"], "Result | None"]


def parse_path(path: str) -> tuple[str, str, str | None] | None:
    """``(project, model, version or None)`` of a predict path, or None."""
    if not path.endswith(SUFFIX):
        return None
    parts = path[: -len(SUFFIX)].split("/")
    if len(parts) not in (6, 8) or parts[1] != "v1" or parts[2] != "projects" or parts[4] != "models":
        return None
    if len(parts) == 8 and parts[6] != "versions":
        return None
    if not all(parts[3:]):
        return None
    return parts[3], parts[5], parts[7] if len(parts) == 8 else None


async def _send(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any, limit: int) -> bytes | Result | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return error_result(413, f"The request body exceeds the limit of {limit} bytes "
                                "(MLE_PREDICT_MAX_BODY_BYTES); send fewer instances per request.")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def handle_predict(scope: Scope, receive: Any, send: Any, authorize: Authorizer) -> None:
    """The ASGI handler of both predict routes."""
    app = scope["app"]
    target = parse_path(scope["path"])
    if target is None:
        await _send(send, 404, jsonio.error_body(f"The requested URL {scope['path']} was not found on this server."))
        return
    authorization = content_type = length = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            authorization = value
        elif key == b"content-type":
            content_type = value
        elif key == b"content-length":
            length = value
    denied = authorize(app, authorization, target)
    if denied is not None:
        await _send(send, *denied)
        return
    if content_type is not None:
        media = content_type.split(b";", 1)[0].strip().lower()
        if media and media not in _JSON_TYPES and not media.endswith(b"+json"):
            await _send(send, 415, jsonio.error_body(
                f"Only JSON request bodies are accepted (Content-Type: application/json), not "
                f"{media.decode('latin-1')!r}."))
            return
    manager = app.state.serving
    limit = manager.settings.predict_max_body_bytes
    if length is not None and length.isdigit() and int(length) > limit:
        await _send(send, *error_result(413, f"The request body of {int(length)} bytes exceeds the limit of "
                                        f"{limit} bytes (MLE_PREDICT_MAX_BODY_BYTES); send fewer instances per "
                                        "request."))
        return
    body = await _read_body(receive, limit)
    if body is None:
        return  # the client went away
    if isinstance(body, tuple):
        await _send(send, *body)
        return
    project, model, version = target
    policy: TrafficPolicy | None = None
    if version is None:
        route = manager.routes.get((project, model))
        if route is not None:
            policy = route.policy
            key = routing_key(policy.routing_key, scope["headers"], body) if policy.routing_key else None
            version = policy.choose(route, key)
    found = manager.resolve(project, model, version)
    if isinstance(found, tuple):
        await _send(send, *found)
        return
    mirrors = policy.mirror(version) if policy is not None and version is not None else ()
    copies = [(name, asyncio.ensure_future(pool.predict(body))) for name in mirrors
              if not isinstance(pool := manager.resolve(project, model, name), tuple)] if mirrors else ()
    if not found.replicas and not found.starting and not found.closed:  # this request starts one
        metrics.scale_from_zero(project, model, version or "")
    started = time.perf_counter()
    try:
        status, payload, extra = await found.predict(body)
    except Exception as err:  # never let a prediction become a hang or a stack trace
        log.exception("predict on %s failed", found.label)
        status, payload, extra = error_result(500, f"Internal error: {type(err).__name__}")
    elapsed = time.perf_counter() - started
    metrics.prediction(project, model, version or "", status, elapsed)
    await _send(send, status, payload, [*extra, (VERSION_HEADER, version.encode())] if version else extra)
    if policy is not None and version is not None:
        for name, copy in copies:
            copy.add_done_callback(partial(_compare, policy, version, name, (status, payload)))
        if policy.observes:
            try:
                policy.observe(version, status, elapsed, body, payload)
            except Exception:  # bookkeeping must never disturb serving
                log.exception("the traffic policy of model %s failed to observe a call", model)


def _compare(policy: TrafficPolicy, served: str, shadow: str, answer: tuple[int, bytes],
             copy: asyncio.Future[Result]) -> None:
    """A shadow's (or mirror's) answer against the served one, once both are in."""
    if copy.cancelled():
        return
    error = copy.exception()
    other = (500, jsonio.error_body(f"{type(error).__name__}")) if error is not None else copy.result()[:2]
    try:
        policy.record_mirror(served, shadow, answer, other)
    except Exception:  # bookkeeping must never disturb serving
        log.exception("comparing %s with %s failed", shadow, served)


def routing_key(name: str, headers: list[tuple[bytes, bytes]], body: bytes) -> str | None:
    """The call's routing key: the header ``name`` (or ``X-MLE-Routing-Key``), else the field
    ``name`` of the first instance; None when the call has none."""
    wanted = name.lower().encode("latin-1", "replace")
    for key, value in headers:
        if key in (wanted, ROUTING_HEADER):
            return value.decode("latin-1")
    try:
        instances = jsonio.loads(body).get("instances")
        first = instances[0] if isinstance(instances, list) and instances else None
    except (ValueError, AttributeError):
        return None
    if isinstance(first, dict) and name in first and first[name] is not None:
        return str(first[name])
    return None


class PredictMiddleware:
    """Answers predict calls before FastAPI routing; passes everything else through."""

    def __init__(self, app: Any, authorize: Authorizer) -> None:
        self.app = app
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(SUFFIX)
            and parse_path(scope["path"]) is not None
            and getattr(scope["app"].state, "serving", None) is not None
        ):
            await handle_predict(scope, receive, send, self.authorize)
            return
        await self.app(scope, receive, send)


class PredictEndpoint:
    """The routes' endpoint (an ASGI app, so Starlette passes the raw scope)."""

    def __init__(self, authorize: Authorizer) -> None:
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if getattr(scope["app"].state, "serving", None) is None:
            await _send(send, 503, jsonio.error_body("Online prediction is not enabled on this server."))
            return
        await handle_predict(scope, receive, send, self.authorize)
