"""A small real HTTP server that speaks the mlengine REST API, for client and CLI tests.

``FakeAPI`` routes requests by (method, regex) to handlers and records every request; it
checks the bearer token like the real server. ``FakeMLServer`` adds an in-memory jobs backend
(create/get/list with pages/cancel/patch with etag/logs/upload/tokens/server info) whose job
states the test drives.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "test-token"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    groups: tuple[str, ...] = ()

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


def google_error(code: int, status: str, message: str) -> tuple[int, Any]:
    return code, {"error": {"code": code, "message": message, "status": status}}


Handler = Callable[[Request], tuple[int, Any]]


@dataclass
class FakeAPI:
    token: str = TOKEN
    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.routes.insert(0, (method, re.compile(pattern), fn))
            return fn

        return register

    def handle(self, req: Request) -> tuple[int, Any]:
        self.requests.append(req)
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return google_error(401, "UNAUTHENTICATED", "Missing or invalid bearer token")
        for method, pattern, fn in self.routes:
            match = pattern.fullmatch(req.path)
            if method == req.method and match:
                req.groups = tuple(unquote(g) for g in match.groups())
                return fn(req)
        return google_error(404, "NOT_FOUND", f"No route {req.method} {req.path}")

    def start(self) -> str:
        api = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    self.command, parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()}, body,
                )
                status, payload = api.handle(req)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, bytes) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeMLServer(FakeAPI):
    """In-memory jobs. ``script[job_id]`` is a list of (state, log entries, extra fields)
    steps; each GET of the job advances one step (the last step sticks)."""

    def __init__(self, *, same_machine: bool = True) -> None:
        super().__init__()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[dict[str, Any]]] = {}
        self.script: dict[str, list[tuple[str, list[dict[str, Any]], dict[str, Any]]]] = {}
        self.uploads: dict[str, bytes] = {}
        self.tokens: dict[str, str] = {}
        self.same_machine = same_machine
        self.etag_conflicts = 0
        self._install()

    def add_job(self, job_id: str, state: str = "QUEUED", **fields: Any) -> dict[str, Any]:
        job = {"jobId": job_id, "state": state, "createTime": f"2026-01-01T00:00:{len(self.jobs):02d}.5Z",
               "etag": "e0", "labels": {}, **fields}
        self.jobs[job_id] = job
        self.logs.setdefault(job_id, [])
        return job

    def _install(self) -> None:
        jobs_re = r"/v1/projects/([^/]+)/jobs"

        @self.route("GET", "/v1/server")
        def info(req: Request) -> tuple[int, Any]:
            host = socket.gethostname() if self.same_machine else "elsewhere.example"
            mid = _machine_id() if self.same_machine else "0" * 32
            return 200, {"version": "0.1.0", "executor": "local", "capacitySlots": 2,
                         "hostname": host, "machineId": mid, "home": "/srv", "pid": 1}

        @self.route("POST", jobs_re)
        def create(req: Request) -> tuple[int, Any]:
            body = req.json()
            if body["jobId"] in self.jobs:
                return google_error(409, "ALREADY_EXISTS", f"Job {body['jobId']} already exists.")
            job = self.add_job(body["jobId"], labels=body.get("labels", {}),
                               trainingInput=body["trainingInput"])
            return 200, job

        @self.route("GET", jobs_re)
        def list_jobs(req: Request) -> tuple[int, Any]:
            items = sorted(self.jobs.values(), key=lambda j: j["createTime"], reverse=True)
            if req.query.get("filter", "").startswith("state="):
                items = [j for j in items if j["state"] == req.query["filter"][6:]]
            size = int(req.query.get("pageSize", 100))
            start = int(req.query.get("pageToken", 0))
            page: dict[str, Any] = {"jobs": items[start:start + size]}
            if start + size < len(items):
                page["nextPageToken"] = str(start + size)
            return 200, page

        @self.route("GET", jobs_re + r"/([^/]+)")
        def get(req: Request) -> tuple[int, Any]:
            job_id = req.groups[1]
            if job_id not in self.jobs:
                return google_error(404, "NOT_FOUND", f"Job projects/{req.groups[0]}/jobs/{job_id} not found.")
            steps = self.script.get(job_id)
            if steps:
                state, entries, extra = steps.pop(0) if len(steps) > 1 else steps[0]
                self.jobs[job_id].update(state=state, **extra)
                if entries:
                    self.logs[job_id].extend(entries)
                    entries.clear()
            return 200, self.jobs[job_id]

        @self.route("GET", jobs_re + r"/([^/]+)/logs")
        def logs(req: Request) -> tuple[int, Any]:
            entries = self.logs.get(req.groups[1], [])
            start = int(req.query.get("pageToken") or 0)
            return 200, {"entries": entries[start:], "nextPageToken": str(len(entries))}

        @self.route("POST", jobs_re + r"/([^/]+):cancel")
        def cancel(req: Request) -> tuple[int, Any]:
            self.jobs[req.groups[1]]["state"] = "CANCELLED"
            return 200, {}

        @self.route("PATCH", jobs_re + r"/([^/]+)")
        def patch(req: Request) -> tuple[int, Any]:
            job = self.jobs[req.groups[1]]
            body = req.json()
            if self.etag_conflicts > 0:
                self.etag_conflicts -= 1
                job["etag"] = job["etag"] + "x"
            if body.get("etag") and body["etag"] != job["etag"]:
                return google_error(409, "ABORTED", "The etag does not match")
            job["labels"] = body["labels"]
            job["etag"] = job["etag"] + "+"
            return 200, job

        @self.route("POST", r"/v1/projects/([^/]+)/packages:upload")
        def upload(req: Request) -> tuple[int, Any]:
            name = req.query["filename"]
            self.uploads[name] = req.body
            digest = hashlib.sha256(req.body).hexdigest()
            return 200, {"uri": f"file:///srv/staging/{digest}/{name}", "sha256": digest}

        @self.route("POST", "/v1/tokens")
        def create_token(req: Request) -> tuple[int, Any]:
            body = req.json()
            self.tokens[body["name"]] = body["role"]
            return 200, {**body, "token": "secret-" + body["name"]}

        @self.route("GET", "/v1/tokens")
        def list_tokens(req: Request) -> tuple[int, Any]:
            return 200, {"tokens": [{"name": n, "role": r, "createTime": "2026-01-01T00:00:00.123Z"}
                                    for n, r in self.tokens.items()]}

        @self.route("DELETE", r"/v1/tokens/([^/]+)")
        def delete_token(req: Request) -> tuple[int, Any]:
            if req.groups[0] not in self.tokens:
                return google_error(404, "NOT_FOUND", f"Token {req.groups[0]} not found.")
            del self.tokens[req.groups[0]]
            return 200, {}


def _machine_id() -> str | None:
    from mlengine.client.connection import machine_identity

    return machine_identity()[0]
