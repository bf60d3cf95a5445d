"""A toy service kind for tests: a tiny uvicorn app that serves ``<prefix>healthz``, echoes
HTTP requests as JSON (method, path, query, headers, body size and digest, its pid) and echoes
websocket messages, only to requests with its upstream key (403 otherwise). Loaded by the e2e
server through ``MLE_SERVICE_KINDS=tests.services.toy_kind:ToyKind``.

Spec (all optional): ``idleTimeoutSeconds`` (0 or absent: never idle), ``crashAfterSeconds``
(the process exits with code 3 that long after it starts), ``exitAtStart`` (exit code, before
serving), ``unhealthy`` (``healthz`` answers 500), ``startTimeoutSeconds``, ``maxRestarts``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from mlengine.errors import invalid
from mlengine.services import ServiceCommand, ServiceInstance, ServiceKind, ServicePolicy
from mlengine.services._base import UPSTREAM_KEY_HEADER, new_secret, read_secret

#: The upstream key (fresh at every start): the toy answers only requests carrying it.
KEY_FILE = "upstream_key"

SERVER = r'''
import hashlib, json, os, sys, threading
port, prefix, crash, exit_code, unhealthy = (int(sys.argv[1]), sys.argv[2], float(sys.argv[3]),
                                             int(sys.argv[4]), sys.argv[5] == "1")
key = open(sys.argv[6]).read().strip().encode()
print(f"toy service starting on {port} under {prefix}", flush=True)
if exit_code:
    print("toy service: failing at start on purpose", file=sys.stderr, flush=True)
    sys.exit(exit_code)
if crash > 0:
    def crash_now():
        print("toy service: crashing on purpose", flush=True)
        os._exit(3)
    threading.Timer(crash, crash_now).start()
import uvicorn

async def app(scope, receive, send):
    if scope["type"] in ("http", "websocket") and (b"x-mlengine-upstream-key", key) not in scope["headers"]:
        if scope["type"] == "websocket":  # only the proxy, which sends the key, gets in
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"only the proxy"})
        return
    if scope["type"] == "websocket":
        await receive()
        chosen = (scope.get("subprotocols") or [None])[0]
        await send({"type": "websocket.accept", "subprotocol": chosen})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    if scope["type"] != "http":
        return
    digest, size = hashlib.sha256(), 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == prefix + "healthz":
        status, body = (500 if unhealthy else 200), b"ok"
        headers = [(b"content-type", b"text/plain")]
    elif path == prefix + "redirect":
        status, body = 302, b""
        headers = [(b"location", f"http://127.0.0.1:{port}{prefix}echo".encode())]
    elif path.startswith(prefix):
        status = 200
        body = json.dumps({
            "method": scope["method"], "path": path, "rawPath": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "bodySize": size, "bodySha256": digest.hexdigest(), "pid": os.getpid(),
        }).encode()
        headers = [(b"content-type", b"application/json"), (b"set-cookie", b"toy=1; Path=" + prefix.encode()),
                   (b"set-cookie", b"mle_token=stolen; Path=/")]
    else:
        status, body, headers = 404, b"not under the prefix", [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
'''

_FIELDS = {"idleTimeoutSeconds", "crashAfterSeconds", "exitAtStart", "unhealthy", "startTimeoutSeconds",
           "maxRestarts"}


class ToyKind(ServiceKind):
    name = "toy"

    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        for key in spec:
            if key not in _FIELDS:
                raise invalid(f"spec.{key}", f"unknown field; the toy service takes {', '.join(sorted(_FIELDS))}")
        out: dict[str, Any] = {}
        for key in ("idleTimeoutSeconds", "crashAfterSeconds", "startTimeoutSeconds"):
            if key in spec:
                value = spec[key]
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                    raise invalid(f"spec.{key}", "must be a number of seconds >= 0")
                out[key] = float(value)
        for key in ("exitAtStart", "maxRestarts"):
            if key in spec:
                value = spec[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise invalid(f"spec.{key}", "must be an integer >= 0")
                out[key] = value
        if "unhealthy" in spec:
            if not isinstance(spec["unhealthy"], bool):
                raise invalid("spec.unhealthy", "must be true or false")
            out["unhealthy"] = spec["unhealthy"]
        return out

    def command(self, instance: ServiceInstance) -> ServiceCommand:
        spec = instance.spec
        new_secret(instance.directory / KEY_FILE)
        return ServiceCommand(argv=[
            sys.executable, "-c", SERVER, str(instance.port), instance.url_prefix,
            str(spec.get("crashAfterSeconds", 0)), str(spec.get("exitAtStart", 0)),
            "1" if spec.get("unhealthy") else "0", str(instance.directory / KEY_FILE),
        ], env={"PYTHONUNBUFFERED": "1"})

    def health_path(self, instance: ServiceInstance) -> str:
        return instance.url_prefix + "healthz"

    def upstream_headers(self, instance: ServiceInstance) -> dict[str, str]:
        return {UPSTREAM_KEY_HEADER: read_secret(instance.directory / KEY_FILE)}

    def policy(self, spec: Mapping[str, Any]) -> ServicePolicy:
        return ServicePolicy(
            start_timeout_seconds=float(spec.get("startTimeoutSeconds") or 15.0),
            health_interval_seconds=0.3, health_timeout_seconds=1.0, unhealthy_after=2,
            max_restarts=int(spec.get("maxRestarts", 2)), restart_window_seconds=60.0,
            restart_backoff_seconds=0.1, max_backoff_seconds=0.5,
            idle_timeout_seconds=float(spec["idleTimeoutSeconds"]) if spec.get("idleTimeoutSeconds") else None,
            stop_grace_seconds=2.0,
        )
