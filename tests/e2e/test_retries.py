"""scheduling.maxRetries (mlengine): a replica killed by a signal is an infrastructure failure,
so the job starts again and a trainer that checkpoints to --job-dir resumes; the trainer's own
non-zero exit is never retried."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, build_package, job_body, write_trainer

pytestmark = pytest.mark.e2e

CHECKPOINTING_TRAINER = """
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
parser.add_argument("--fail", action="store_true")
args, _ = parser.parse_known_args()
os.makedirs(args.job_dir, exist_ok=True)
checkpoint = os.path.join(args.job_dir, "checkpoint.json")
if args.fail:
    print("a bug in the trainer", flush=True)
    sys.exit(3)
if os.path.exists(checkpoint):
    with open(checkpoint) as f:
        print(f"resumed from step {json.load(f)['step']}", flush=True)
    sys.exit(0)
with open(checkpoint, "w") as f:
    json.dump({"step": 5, "pid": os.getpid()}, f)
print("checkpointed step 5", flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    write_trainer(root, CHECKPOINTING_TRAINER)
    return build_package(root)


def test_a_killed_replica_is_retried_and_resumes(server: ServerProcess, package: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "out"
    body = job_body("resumer", package, jobDir=str(job_dir), scheduling={"maxRetries": 1})
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=body).status_code == 200
    checkpoint = job_dir / "checkpoint.json"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        job = server.job("resumer")
        assert job["state"] in ("QUEUED", "PREPARING", "RUNNING"), job.get("errorMessage")
        time.sleep(0.1)
    os.kill(json.loads(checkpoint.read_text())["pid"], signal.SIGKILL)
    job = server.wait_state("resumer", ("SUCCEEDED", "FAILED"), timeout=60)
    assert job["state"] == "SUCCEEDED", job
    assert job["attempt"] == 2
    messages = [e["message"] for e in server.logs("resumer")]
    assert "resumed from step 5" in messages
    assert any("killed by signal SIGKILL" in m and "attempt 2 of 2" in m for m in messages)


def test_the_trainers_own_failure_is_not_retried(server: ServerProcess, package: Path, tmp_path: Path) -> None:
    body = job_body("buggy", package, args=["--fail"], jobDir=str(tmp_path / "b"), scheduling={"maxRetries": 3})
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=body).status_code == 200
    job = server.wait_state("buggy", ("SUCCEEDED", "FAILED"), timeout=60)
    assert job["state"] == "FAILED" and job["attempt"] == 1 and "non-zero status of 3" in job["errorMessage"]


def test_max_retries_is_validated(server: ServerProcess, package: Path) -> None:
    body = job_body("bad", package, scheduling={"maxRetries": 99})
    response = server.api("POST", "/v1/projects/mlengine/jobs", json=body)
    assert response.status_code == 400 and "trainingInput.scheduling.maxRetries" in response.text
