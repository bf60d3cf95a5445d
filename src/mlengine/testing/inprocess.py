"""The real mlengine server inside this process, reached by the SDK and the CLI without a socket.

>>> from mlengine.config import load_settings
>>> from mlengine.testing.inprocess import InProcessServer
>>> with InProcessServer(load_settings(home="/tmp/mle-notebook")) as server:
...     client = server.client()                 # a mlengine.client.Client
...     client.server_info()["executor"]
'local'

Contract
--------
- What runs is the control plane of ``mle server``: the app and components that
  :func:`mlengine.api.server.build_app` builds (store and migrations, admin token, job service,
  scheduler, serving manager), inside Starlette's ``TestClient``, which runs the app's lifespan
  on a background event loop: the scheduler launches real replicas, the serving manager real
  model replicas. Only the socket is missing (no uvicorn, no ``server.json``).
- While the server is open its :attr:`~InProcessServer.url` (a unique ``http://...invalid``
  address that no network can answer) is registered with
  :func:`mlengine.client.connection.register_transport`: every
  :class:`~mlengine.client.http.Client` created for that URL in this process is answered by the
  app, including ``mle`` commands run in-process (click's ``CliRunner``) with
  ``MLE_API_URL=server.url`` and ``MLE_TOKEN=server.token``.
- :attr:`~InProcessServer.requests` records every request that reached the app through that
  transport (body read), so a test can check what a client sent, or that it sent nothing.
- ``raise_server_exceptions`` (default True, like Starlette) re-raises an unhandled server
  exception inside the client call instead of answering 500, so a test shows the server bug.
- Closing stops the lifespan (serving manager, scheduler, executor), unregisters the URL and
  disposes the store. Like a real server shutdown it does NOT stop the replicas of jobs still
  running: call :meth:`~InProcessServer.stop_jobs` first to cancel them and wait.
- One ``InProcessServer`` per ``MLE_HOME`` at a time (as for real servers); the object is used
  from one thread at a time, while the app serves requests from any thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import warnings
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from mlengine.client import connection
from mlengine.config import Settings

if TYPE_CHECKING:
    from starlette.testclient import TestClient

    from mlengine.client.http import Client


class InProcessTransport(httpx.BaseTransport):
    """An httpx transport that hands each request to an app running in a Starlette
    ``TestClient`` (whose portal runs the app's event loop) and records it.

    Only plain values cross between the two clients (method, URL, header pairs, bytes), so this
    works whichever httpx package the ``TestClient`` is built on (``httpx`` or ``httpx2``).
    """

    def __init__(self, test_client: TestClient, requests: list[httpx.Request], lock: threading.Lock) -> None:
        self._test_client = test_client
        self._requests = requests
        self._lock = lock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()  # a streamed upload becomes bytes the app and the record both read
        with self._lock:
            self._requests.append(request)
        answer = self._test_client.request(
            request.method, str(request.url), headers=list(request.headers.multi_items()),
            content=body, follow_redirects=False,
        )
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(answer.status_code, headers=headers, content=answer.content, request=request)


class InProcessServer:
    """The real control plane for ``settings`` (its ``MLE_HOME``, store and executor), served
    in this process; a context manager. See the module docstring for the contract."""

    def __init__(self, settings: Settings, *, raise_server_exceptions: bool = True) -> None:
        self.settings = settings
        self.url = f"http://mle-{uuid.uuid4().hex[:12]}.invalid"
        self.token = ""
        self.parts: dict[str, Any] = {}
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()
        self._raise = raise_server_exceptions
        self._test_client: TestClient | None = None

    def start(self) -> InProcessServer:
        from mlengine.api.server import build_app

        with warnings.catch_warnings():
            # Starlette prefers httpx2 for its TestClient and warns when it falls back to httpx
            # (what the SDK uses); either works here (see InProcessTransport).
            warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
            from starlette.testclient import TestClient

        if self._test_client is not None:
            raise RuntimeError("this in-process server is already running")
        app, self.parts = build_app(self.settings)
        app.state.server_hosts.add(self.url.split("//", 1)[1])  # its own name (api/hosts.py)
        test_client = TestClient(app, base_url=self.url, raise_server_exceptions=self._raise)
        try:
            test_client.__enter__()  # runs the lifespan: scheduler and serving manager start
        except BaseException:
            self.parts["db"].dispose()
            raise
        self._test_client = test_client
        self.token = self.settings.token_file.read_text().strip()
        connection.register_transport(self.url, self._transport)
        return self

    def _transport(self) -> httpx.BaseTransport:
        if self._test_client is None:
            raise RuntimeError("the in-process server is closed")
        return InProcessTransport(self._test_client, self.requests, self._lock)

    def close(self) -> None:
        test_client, self._test_client = self._test_client, None
        if test_client is None:
            return
        connection.unregister_transport(self.url)
        try:
            test_client.__exit__(None, None, None)  # the lifespan's shutdown
        finally:
            self.parts["db"].dispose()

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # Conveniences --------------------------------------------------------------------------
    def client(self, token: str | None = None, **kwargs: Any) -> Client:
        """A :class:`~mlengine.client.http.Client` of this server (admin token by default)."""
        from mlengine.client.http import Client

        return Client(self.url, self.token if token is None else token, **kwargs)

    def client_env(self) -> dict[str, str]:
        """``MLE_API_URL`` and ``MLE_TOKEN`` that point ``mle`` commands run in this process here."""
        return {"MLE_API_URL": self.url, "MLE_TOKEN": self.token}

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop_jobs(self, timeout: float = 60.0) -> list[str]:
        """Cancel every active job (the API's cancel path) and wait until all have ended;
        returns ``project/jobId`` of those still active after ``timeout`` seconds."""
        from mlengine.errors import MLEngineError
        from mlengine.jobs import lifecycle

        repo, service = self.parts["job_repo"], self.parts["job_service"]
        for row in repo.in_states(lifecycle.ACTIVE):
            if row.parent_pk is None:  # a tuning job cancels its own trials
                with contextlib.suppress(MLEngineError):  # it ended meanwhile
                    service.cancel(row.project, row.job_id)
        deadline = time.monotonic() + timeout
        while True:
            left = [f"{row.project}/{row.job_id}" for row in repo.in_states(lifecycle.ACTIVE)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)
