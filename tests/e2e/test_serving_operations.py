"""Operations on a real server: cancelling a version creation kills its worker's whole process
group and leaves no half-created version; a restarted server adopts a staging worker that is
still alive and starts again one that is gone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, build_package, short_home
from tests.e2e.serving_helpers import (
    MODELS,
    alive,
    kill_serving,
    operation_handle,
    predict,
    wait_operation,
    write_sklearn_model,
)

from mlengine.core.processes import kill_session, session_members

pytestmark = pytest.mark.e2e
ROW = {"instances": [[1.0, 2.0, 3.0]]}

#: A package whose build (not its sdist) waits while the marker file exists: a slow `uv` install
#: the test controls.
SLOW_SETUP = """
import os, sys, time
from setuptools import setup
if "sdist" not in sys.argv:
    deadline = time.time() + 180
    while os.path.exists({marker!r}) and time.time() < deadline:
        time.sleep(0.05)
setup(name="{name}", version="0.1", packages=["{name}"])
"""


@pytest.fixture
def make_server() -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(home: Path | None = None) -> ServerProcess:
        server = ServerProcess(home or short_home()).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
        kill_serving(server.home)


def slow_package(root: Path, marker: Path) -> Path:
    name = f"slow{uuid.uuid4().hex[:8]}"  # a new package each time: no build cache can skip setup.py
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(f"TOKEN = {uuid.uuid4().hex!r}\n")
    (root / "setup.py").write_text(SLOW_SETUP.format(marker=str(marker), name=name))
    return build_package(root, name)


def start_creation(server: ServerProcess, model: str, version: str, model_dir: Path, package: Path) -> dict[str, Any]:
    if server.api("GET", f"{MODELS}/{model}").status_code == 404:
        assert server.api("POST", MODELS, json={"name": model}).status_code == 200
    response = server.api("POST", f"{MODELS}/{model}/versions", json={
        "name": version, "deploymentUri": str(model_dir), "packageUris": [str(package)]})
    assert response.status_code == 200, response.text
    return response.json()


def wait_worker(server: ServerProcess, operation: dict[str, Any], timeout: float = 60) -> tuple[dict[str, Any],
                                                                                                list[int]]:
    """The operation's worker handle once the worker is busy installing (it and its children)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        handle = operation_handle(server, operation["name"])
        if handle.get("pid"):
            members = session_members(handle["pid"], handle.get("startTicks"))
            if len(members) >= 3:  # the worker, uv, and the package build it runs
                return handle, members
        time.sleep(0.1)
    raise AssertionError(f"no busy worker for {operation['name']}: {operation_handle(server, operation['name'])}")


def test_cancel_kills_the_worker_group_and_leaves_no_version(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    marker = tmp_path / "hold"
    marker.write_text("")
    package = slow_package(tmp_path / "src", marker)
    model_dir = write_sklearn_model(tmp_path / "model")
    operation = start_creation(server, "held", "v1", model_dir, package)
    handle, members = wait_worker(server, operation)
    assert handle["step"] == "stage" and handle["attempt"] == 1
    assert predict(server, "held", ROW).status_code == 503  # CREATING

    cancelled = server.api("POST", f"/v1/{operation['name']}:cancel", json={})
    assert cancelled.status_code == 200 and cancelled.json() == {}
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in members if alive(pid)], "the worker's processes outlived the cancel"
    assert not session_members(handle["pid"], handle.get("startTicks"))

    done = server.api("GET", f"/v1/{operation['name']}").json()
    assert done["done"] is True and done["error"] == {"code": 1, "message": "Version creation was cancelled."}
    assert done["metadata"]["isCancellationRequested"] is True
    assert done["metadata"]["operationType"] == "CREATE_VERSION"
    assert done["metadata"]["modelName"] == "projects/mlengine/models/held"
    assert server.api("GET", f"{MODELS}/held/versions/v1").status_code == 404
    assert "defaultVersion" not in server.api("GET", f"{MODELS}/held").json()
    assert not list((server.home / "models" / "mlengine" / "held").glob("v1-*"))
    assert predict(server, "held", ROW).status_code == 404
    again = server.api("POST", f"/v1/{operation['name']}:cancel", json={})
    assert again.status_code == 400 and "already done" in again.text

    marker.unlink()  # the same name deploys cleanly afterwards
    created = wait_operation(server, start_creation(server, "held", "v1", model_dir, package))
    assert created["response"]["state"] == "READY", created
    assert predict(server, "held", ROW).status_code == 200


def test_restart_adopts_a_live_worker_and_restarts_a_lost_one(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    marker = tmp_path / "hold"
    marker.write_text("")
    model_dir = write_sklearn_model(tmp_path / "model")
    adopted_op = start_creation(server, "durable", "adopted", model_dir, slow_package(tmp_path / "a", marker))
    lost_op = start_creation(server, "durable", "lost", model_dir, slow_package(tmp_path / "b", marker))
    adopted, adopted_members = wait_worker(server, adopted_op)
    lost, _ = wait_worker(server, lost_op)

    server.kill9()
    assert alive(adopted["pid"]) and alive(lost["pid"]), "workers must outlive the server"
    kill_session(lost["pid"], lost.get("startTicks"), grace=0.5)
    assert not alive(lost["pid"])
    server.start()
    assert server.api("GET", f"/v1/{adopted_op['name']}").json()["done"] is False
    marker.unlink()

    for operation in (adopted_op, lost_op):
        done = wait_operation(server, operation)
        assert done["response"]["state"] == "READY", done
    after_adopted = operation_handle(server, adopted_op["name"])
    after_lost = operation_handle(server, lost_op["name"])
    assert (after_adopted["attempt"], after_adopted["pid"]) == (1, adopted["pid"])  # the same worker
    assert after_lost["attempt"] == 2 and after_lost["pid"] != lost["pid"]  # started again
    assert not any(alive(pid) for pid in adopted_members)
    assert predict(server, "durable", ROW, version="adopted").status_code == 200
    assert predict(server, "durable", ROW, version="lost").status_code == 200
