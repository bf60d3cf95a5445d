"""Notebook kernels have Apache Beam (issue 14.3): the same cached overlay preprocessing jobs
run in, on the kernels' PYTHONPATH only, readable through the kernels' sandbox. A real sandboxed
JupyterLab behind the real app runs a cell through the proxy's kernel websocket."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlengine.core.runtimes import BEAM_REQUIREMENTS
from mlengine.services.kinds.notebook import NotebookKind
from mlengine.testing.services import PROJECT, ServiceHarness, service_harness

pytest.importorskip("jupyterlab")

NAME = "beam"
SERVICES = f"/v1/projects/{PROJECT}/services"
PREFIX = f"{SERVICES}/{NAME}/proxy/"
CELL = "import apache_beam, pandas, sklearn, duckdb\nprint('beam', apache_beam.__version__)"


@pytest.fixture(scope="module")
def h() -> Iterator[ServiceHarness]:
    with service_harness(NotebookKind, environments=True) as harness:
        created = harness.api("POST", SERVICES, json={"name": NAME, "kind": "notebook",
                                                      "spec": {"idleTimeoutSeconds": 600}})
        assert created.status_code == 200, created.text
        service = harness.wait_state(NAME, ("RUNNING", "FAILED"), 240)
        assert service["state"] == "RUNNING", service.get("errorMessage")
        yield harness


def test_a_kernel_imports_apache_beam(h: ServiceHarness) -> None:
    started = h.api("POST", PREFIX + "api/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:
        session = uuid.uuid4().hex
        with h.client.websocket_connect(f"{PREFIX}api/kernels/{kernel}/channels?session_id={session}",
                                        headers=h.auth) as ws:
            msg_id = uuid.uuid4().hex
            ws.send_text(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": session, "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": CELL, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            printed, reply = _run(ws, msg_id)
        assert reply["content"]["status"] == "ok", reply["content"]
        version = BEAM_REQUIREMENTS[0].split("==")[1]
        assert f"beam {version}" in printed
    finally:
        h.api("DELETE", PREFIX + f"api/kernels/{kernel}")


def _run(ws: Any, msg_id: str, timeout: float = 120) -> tuple[str, dict[str, Any]]:
    printed = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.receive_text())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed += message["content"]["text"]
        elif message["msg_type"] == "error":
            printed += "\n".join(message["content"]["traceback"])
        elif message["msg_type"] == "execute_reply":
            return printed, dict(message)
    raise AssertionError(f"no reply from the kernel; printed: {printed}")
