"""Only the proxy reaches a notebook's JupyterLab (issue 14 follow-up): a real sandboxed
JupyterLab behind the real app. Any other process on the machine can connect to its port, so
Jupyter's own token is on and only the proxy sends it: a plain client and a process confined like
another notebook's kernel (or a trainer: the same hidden paths) can neither list nor start
kernels, nor read the token; through the proxy both work, kernel websockets included. Deleting
the service through the generic ``/services`` route revokes the owner's token."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlengine.services.kinds.notebook import JUPYTER_TOKEN_FILE, TOKEN_FILE, NotebookKind, owner_token_name
from mlengine.testing.services import PROJECT, ServiceHarness, service_harness

pytest.importorskip("jupyterlab")

NAME = "nb"
SERVICES = f"/v1/projects/{PROJECT}/services"
PREFIX = f"{SERVICES}/{NAME}/proxy/"

#: Run confined: read the token file, list and start kernels on the port without it.
PROBE = r"""
import json, sys, urllib.request, urllib.error
token_file, base = sys.argv[1], sys.argv[2]
seen = {}
try:
    open(token_file).read()
    seen["read"] = "ok"
except OSError as error:
    seen["read"] = type(error).__name__
for method in ("GET", "POST"):
    request = urllib.request.Request(base + "api/kernels", method=method, data=b"{}" if method == "POST" else None)
    try:
        seen[method] = urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as error:
        seen[method] = error.code
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def h() -> Iterator[ServiceHarness]:
    with service_harness(NotebookKind) as harness:
        assert harness.context.tokens is not None
        _row, secret = harness.context.tokens.create(owner_token_name(PROJECT, NAME), "user:ann")
        directory = harness.manager.directory(PROJECT, NAME)
        directory.mkdir(parents=True)
        (directory / TOKEN_FILE).write_text(secret)  # what the notebooks API writes
        created = harness.api("POST", SERVICES, json={"name": NAME, "kind": "notebook",
                                                      "spec": {"idleTimeoutSeconds": 600, "owner": "user:ann"}})
        assert created.status_code == 200, created.text
        service = harness.wait_state(NAME, ("RUNNING", "FAILED"), 100)
        assert service["state"] == "RUNNING", service.get("errorMessage")
        yield harness


def direct(h: ServiceHarness) -> str:
    return f"http://127.0.0.1:{h.handle(NAME)['port']}{PREFIX}"


def test_a_plain_local_client_cannot_list_or_start_kernels(h: ServiceHarness) -> None:
    base = direct(h)
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(base + "api/kernels").status_code == 403
        assert client.post(base + "api/kernels", json={}).status_code == 403
        assert client.get(base + "api/kernels", headers={"Authorization": "token guessed"}).status_code == 403
        assert client.get(base + "api/contents").status_code == 403
        # The proxy's way in is the token, and only it.
        token = (h.manager.directory(PROJECT, NAME) / JUPYTER_TOKEN_FILE).read_text()
        assert client.get(base + "api/kernels", headers={"Authorization": f"token {token}"}).status_code == 200


def test_a_confined_process_cannot_read_the_token_nor_use_the_port(h: ServiceHarness, tmp_path: Path) -> None:
    from mlengine.services.kinds.notebook import confined_prefix

    settings = h.context.settings
    other = settings.services_dir / PROJECT / "other-notebook"  # confined like another notebook's kernel
    (other / "home").mkdir(parents=True)
    (other / "tmp").mkdir()
    disk = tmp_path / "disk"
    disk.mkdir()
    token_file = h.manager.directory(PROJECT, NAME) / JUPYTER_TOKEN_FILE
    argv = [*confined_prefix(settings, other, disk), "python3", "-c", PROBE, str(token_file), direct(h)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"read": "PermissionError", "GET": 403, "POST": 403}, seen
    assert h.api("GET", PREFIX + "api/kernels").json() == [], "the refused POST started no kernel"


def test_the_proxy_lists_and_starts_kernels_and_relays_their_websocket(h: ServiceHarness) -> None:
    started = h.api("POST", PREFIX + "api/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:
        assert [k["id"] for k in h.api("GET", PREFIX + "api/kernels").json()] == [kernel]
        session = uuid.uuid4().hex
        with h.client.websocket_connect(f"{PREFIX}api/kernels/{kernel}/channels?session_id={session}",
                                        headers=h.auth) as ws:
            msg_id = uuid.uuid4().hex
            ws.send_text(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "test",
                           "session": session, "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell", "buffers": []}))
            reply = _reply(ws, msg_id)
        assert reply["content"]["status"] == "ok" and reply["content"]["language_info"]["name"] == "python"
    finally:
        h.api("DELETE", PREFIX + f"api/kernels/{kernel}")


def _reply(ws: Any, msg_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.receive_text())
        if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"].endswith("_reply"):
            return dict(message)
    raise AssertionError("no reply from the kernel")


def test_deleting_through_the_services_route_revokes_the_owner_token(h: ServiceHarness) -> None:
    secret = (h.manager.directory(PROJECT, NAME) / TOKEN_FILE).read_text()
    tokens = h.context.tokens
    assert tokens is not None and tokens.find(secret) is not None
    assert h.api("DELETE", f"{SERVICES}/{NAME}").status_code == 200
    assert h.api("GET", f"{SERVICES}/{NAME}").status_code == 404
    assert tokens.find(secret) is None, "the kernels' owner token outlived its notebook"
