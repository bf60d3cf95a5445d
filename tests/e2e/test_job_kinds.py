"""A job kind defined only in the tests (``tests/jobs/toy_kinds.py``: sleep N seconds, exit
with a code), loaded by a real server through ``MLE_JOB_KINDS``: it runs through the whole
lifecycle, is cancelled, and survives ``kill -9`` of the server, without the scheduler
knowing it exists."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import REPO, ServerProcess, _kill_leftovers, short_home

pytestmark = pytest.mark.e2e

TOY_ENV = {"MLE_JOB_KINDS": "toy_kinds:SleepKind",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "jobs"), str(REPO)])}


@pytest.fixture(scope="module")
def toy_server() -> Iterator[ServerProcess]:
    server = ServerProcess(short_home(), TOY_ENV).start()
    yield server
    server.stop()
    _kill_leftovers(server.home)


def submit(server: ServerProcess, job_id: str, **sleep: Any) -> dict[str, Any]:
    response = server.api("POST", "/v1/projects/mlengine/jobs", json={"jobId": job_id, "sleepInput": sleep})
    assert response.status_code == 200, response.text
    return response.json()


def test_lifecycle_through_the_real_server(toy_server: ServerProcess) -> None:
    job = submit(toy_server, "nap", seconds=1)
    assert job["state"] == "QUEUED" and job["sleepInput"] == {"seconds": 1, "exitCode": 0}
    assert job["sleepOutput"] == {"slept": False} and "trainingInput" not in job
    running = toy_server.wait_state("nap", ("RUNNING",), timeout=30)
    assert "startTime" in running
    done = toy_server.wait_state("nap", ("SUCCEEDED", "FAILED"), timeout=30)
    assert done["state"] == "SUCCEEDED", done
    messages = [e["message"] for e in toy_server.logs("nap")]
    assert "sleeping" in messages and "Job completed successfully." in messages
    listed = toy_server.api("GET", "/v1/projects/mlengine/jobs", params={"filter": "state=SUCCEEDED"}).json()
    assert "nap" in [j["jobId"] for j in listed["jobs"]]


def test_failure_and_bad_input(toy_server: ServerProcess) -> None:
    submit(toy_server, "grumpy", seconds=0, exitCode=4)
    job = toy_server.wait_state("grumpy", ("SUCCEEDED", "FAILED"), timeout=30)
    assert job["state"] == "FAILED" and "non-zero status of 4" in job["errorMessage"]
    bad = toy_server.api("POST", "/v1/projects/mlengine/jobs", json={"jobId": "x", "sleepInput": {"seconds": -2}})
    assert bad.status_code == 400 and "sleepInput.seconds" in bad.json()["error"]["message"]
    assert toy_server.api("GET", "/v1/projects/mlengine/jobs/x").status_code == 404  # nothing stored
    neither = toy_server.api("POST", "/v1/projects/mlengine/jobs", json={"jobId": "y"})
    assert neither.status_code == 400 and "sleepInput" in neither.json()["error"]["message"]


def test_cancel(toy_server: ServerProcess) -> None:
    submit(toy_server, "long", seconds=300)
    toy_server.wait_state("long", ("RUNNING",), timeout=30)
    assert toy_server.api("POST", "/v1/projects/mlengine/jobs/long:cancel").status_code == 200
    job = toy_server.wait_state("long", ("CANCELLED",), timeout=30)
    assert "endTime" in job


def test_kill_9_of_the_server_and_reconciliation() -> None:
    server = ServerProcess(short_home(), TOY_ENV).start()
    try:
        submit(server, "survivor", seconds=3)
        submit(server, "doomed", seconds=300)
        server.wait_state("survivor", ("RUNNING",), timeout=30)
        server.wait_state("doomed", ("RUNNING",), timeout=30)
        server.kill9()
        time.sleep(3.5)  # the survivor's replica finishes while no server runs
        server.start()
        job = server.wait_state("survivor", ("SUCCEEDED", "FAILED"), timeout=30)
        assert job["state"] == "SUCCEEDED", job
        assert server.job("doomed")["state"] == "RUNNING"  # its replica outlived the server
        assert server.api("POST", "/v1/projects/mlengine/jobs/doomed:cancel").status_code == 200
        assert server.wait_state("doomed", ("CANCELLED",), timeout=30)["state"] == "CANCELLED"
    finally:
        server.stop()
        _kill_leftovers(server.home)


def test_a_kind_that_cannot_be_loaded_stops_the_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLE_")}
    env.update({"MLE_HOME": str(tmp_path), "MLE_JOB_KINDS": "no_such_module:Kind"})
    result = subprocess.run([sys.executable, "-m", "mlengine.api.server", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "MLE_JOB_KINDS entry 'no_such_module:Kind' cannot be loaded" in result.stderr
