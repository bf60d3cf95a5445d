"""Services on a real ``mle server`` process: the toy kind (tests/services/toy_kind.py, loaded
through ``MLE_SERVICE_KINDS``) reached through the server's authenticated proxy over HTTP and
websockets, restarted after ``kill -9``, stopped when idle, and reconciled after the server
itself is killed with ``kill -9`` and started again. Everything listens on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.helpers import REPO, ServerProcess, short_home

pytestmark = pytest.mark.e2e

SERVICES = "/v1/projects/mlengine/services"


def _kill_services(home: Path) -> None:
    """Services outlive the server: kill every process group working under ``home``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(home / "services")):
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(int(proc.name)), signal.SIGKILL)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    srv = ServerProcess(short_home(), {"MLE_SERVICE_KINDS": "tests.services.toy_kind:ToyKind",
                                       "PYTHONPATH": path, "MLE_SERVICE_PROXY_WAIT": "20"})
    srv.start()
    try:
        yield srv
    finally:
        with contextlib.suppress(Exception):
            for service in srv.api("GET", SERVICES).json().get("services", []):
                srv.api("DELETE", f"/v1/{service['name']}")
        srv.stop()
        _kill_services(srv.home)


def service(srv: ServerProcess, name: str) -> dict[str, Any]:
    response = srv.api("GET", f"{SERVICES}/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(srv: ServerProcess, name: str, check: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    current = service(srv, name)
    while not check(current):
        if time.monotonic() > deadline:
            raise AssertionError(f"service {name} after {timeout}s: {current}")
        time.sleep(0.1)
        current = service(srv, name)
    return current


def create(srv: ServerProcess, name: str, **spec: Any) -> dict[str, Any]:
    created = srv.api("POST", SERVICES, json={"name": name, "kind": "toy", "spec": spec})
    assert created.status_code == 200, created.text
    return wait_for(srv, name, lambda s: s["state"] == "RUNNING")


def echo(srv: ServerProcess, name: str, path: str = "echo") -> dict[str, Any]:
    response = srv.api("GET", f"{SERVICES}/{name}/proxy/{path}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ws_url(srv: ServerProcess, name: str) -> str:
    return srv.url.replace("http://", "ws://") + f"{SERVICES}/{name}/proxy/ws"


def test_proxy_over_http_and_websocket_needs_a_token(server: ServerProcess) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    create(server, "web")
    seen = echo(server, "web", "hello?x=1")
    assert seen["path"].endswith("/proxy/hello") and seen["query"] == "x=1"
    assert "authorization" not in {k for k, _ in seen["headers"]}
    proxy = f"{server.url}{SERVICES}/web/proxy/echo"
    with httpx.Client(timeout=10) as anonymous:
        refused = anonymous.get(proxy)
        assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"
        # A browser: ?access_token once, then the cookie (HTTP and websocket).
        first = anonymous.get(proxy + "?access_token=" + server.token, follow_redirects=False)
        assert first.status_code == 303 and "HttpOnly" in first.headers["set-cookie"]
        assert anonymous.get(f"{server.url}{first.headers['location']}").status_code == 200
        cookie = f"mle_token={anonymous.cookies['mle_token']}"

    with connect(ws_url(server, "web"), additional_headers={"Authorization": f"Bearer {server.token}"},
                 proxy=None, open_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "echo:ping"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=10) == b"\x01\x02"
    with connect(ws_url(server, "web"), additional_headers={"Cookie": cookie}, proxy=None, open_timeout=10) as ws:
        ws.send("cookie")
        assert ws.recv(timeout=10) == "echo:cookie"
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "web"), proxy=None, open_timeout=10)
    assert info.value.response.status_code == 401


def test_a_killed_service_is_restarted(server: ServerProcess) -> None:
    create(server, "victim")
    pid = echo(server, "victim")["pid"]
    os.kill(pid, signal.SIGKILL)
    restarted = wait_for(server, "victim", lambda s: s["restarts"] == 1 and s["state"] == "RUNNING")
    assert "killed by SIGKILL" in restarted["errorMessage"]
    assert echo(server, "victim")["pid"] != pid


def test_an_idle_service_stops_and_a_request_wakes_it(server: ServerProcess) -> None:
    create(server, "nap", idleTimeoutSeconds=1.5)
    pid = echo(server, "nap")["pid"]
    stopped = wait_for(server, "nap", lambda s: s["state"] == "STOPPED", timeout=15)
    assert stopped["stopReason"] == "IDLE"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert echo(server, "nap")["pid"] != pid  # the request started it again and waited
    assert service(server, "nap")["state"] == "RUNNING"


def test_services_survive_a_server_kill9_and_are_reconciled(server: ServerProcess) -> None:
    create(server, "survivor")
    create(server, "casualty")
    survivor = echo(server, "survivor")["pid"]
    casualty = echo(server, "casualty")["pid"]
    server.kill9()
    os.kill(casualty, signal.SIGKILL)  # dies while no server watches it
    server.start()
    kept = wait_for(server, "survivor", lambda s: s["state"] == "RUNNING")
    assert kept["restarts"] == 0
    assert echo(server, "survivor")["pid"] == survivor  # re-adopted, still reachable
    back = wait_for(server, "casualty", lambda s: s["state"] == "RUNNING" and s["restarts"] == 1)
    assert "exited while the server was down" in back["errorMessage"]
    assert echo(server, "casualty")["pid"] != casualty
    with pytest.raises(ProcessLookupError):
        os.kill(casualty, 0)
