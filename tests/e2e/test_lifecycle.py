"""Cancel, capacity, time limits and surviving a killed control plane, on a real server."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, job_body

pytestmark = pytest.mark.e2e
JOBS = "/v1/projects/mlengine/jobs"


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_file(path: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # still being written
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_cancel_running_job_within_10s_and_processes_gone(server: ServerProcess, echo_package: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    server.api("POST", JOBS, json=job_body("to_cancel", echo_package, ["--out", str(out), "--sleep", "300"]))
    seen = _wait_file(out)
    assert server.job("to_cancel")["state"] == "RUNNING"
    started = time.monotonic()
    response = server.api("POST", f"{JOBS}/to_cancel:cancel", json={})
    assert response.status_code == 200 and response.json() == {}
    job = server.wait_state("to_cancel", ("CANCELLED",), timeout=10)
    assert time.monotonic() - started < 10
    assert job["endTime"]
    assert not _pid_alive(seen["pid"])


def test_cancel_trainer_that_ignores_sigterm_is_killed(server: ServerProcess, tmp_path: Path) -> None:
    from tests.e2e.helpers import build_package, write_trainer

    write_trainer(tmp_path, """
        import json, os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        json.dump({"pid": os.getpid()}, open(sys.argv[sys.argv.index("--out") + 1], "w"))
        time.sleep(600)
    """)
    package = build_package(tmp_path)
    out = tmp_path / "pid.json"
    server.api("POST", JOBS, json=job_body("stubborn", package, ["--out", str(out)]))
    pid = _wait_file(out)["pid"]
    server.api("POST", f"{JOBS}/stubborn:cancel", json={})
    assert server.job("stubborn")["state"] in ("CANCELLING", "CANCELLED")
    server.wait_state("stubborn", ("CANCELLED",), timeout=10)
    assert not _pid_alive(pid)


def test_capacity_queue_and_job_position(server_factory, echo_package: Path, tmp_path: Path) -> None:
    server = server_factory(MLE_CAPACITY_SLOTS="1")
    out = tmp_path / "first.json"
    server.api("POST", JOBS, json=job_body("first", echo_package, ["--out", str(out), "--sleep", "300"]))
    _wait_file(out)
    server.api("POST", JOBS, json=job_body("second", echo_package))
    server.api("POST", JOBS, json=job_body("third", echo_package))
    time.sleep(0.5)
    second, third = server.job("second"), server.job("third")
    assert second["state"] == "QUEUED" and second["jobPosition"] == "1"
    assert third["state"] == "QUEUED" and third["jobPosition"] == "2"
    # a queued job is cancelled at once
    server.api("POST", f"{JOBS}/third:cancel", json={})
    assert server.job("third")["state"] == "CANCELLED"
    server.api("POST", f"{JOBS}/first:cancel", json={})
    assert server.wait_state("second", ("SUCCEEDED", "FAILED"), timeout=60)["state"] == "SUCCEEDED"
    assert "jobPosition" not in server.job("second")
    # a job larger than the machine runs alone, oversubscribed, as `local train --distributed`
    # would (process mode; machine mode still refuses it: tests/jobs/test_capacity.py)
    body = job_body("too_big", echo_package, scaleTier="CUSTOM", masterType="standard",
                    workerType="standard", workerCount="3")
    server.api("POST", JOBS, json=body)
    assert server.wait_state("too_big", ("SUCCEEDED", "FAILED"), timeout=60)["state"] == "SUCCEEDED"


def test_max_running_time_is_enforced(server: ServerProcess, echo_package: Path) -> None:
    body = job_body("too_long", echo_package, ["--sleep", "300"], scheduling={"maxRunningTime": "2s"})
    server.api("POST", JOBS, json=body)
    job = server.wait_state("too_long", ("CANCELLED", "FAILED", "SUCCEEDED"), timeout=30)
    assert job["state"] == "CANCELLED"
    assert "maxRunningTime" in job["errorMessage"]


def test_server_kill9_loses_nothing(server_factory, echo_package: Path, tmp_path: Path) -> None:
    server = server_factory()
    out = tmp_path / "survivor.json"
    server.api("POST", JOBS, json=job_body("survivor", echo_package, ["--out", str(out), "--sleep", "4"]))
    victim_out = tmp_path / "victim.json"
    server.api("POST", JOBS, json=job_body("victim", echo_package, ["--out", str(victim_out), "--sleep", "300"]))
    survivor_pid = _wait_file(out)["pid"]
    victim_pid = _wait_file(victim_out)["pid"]
    server.kill9()
    assert _pid_alive(survivor_pid), "replicas must outlive the control plane"
    # While the server is down the survivor finishes and the victim's whole replica is killed.
    os.kill(victim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _pid_alive(survivor_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    server.start()
    job = server.wait_state("survivor", ("SUCCEEDED", "FAILED"), timeout=30)
    assert job["state"] == "SUCCEEDED", job
    assert job["startTime"] < job["endTime"]
    victim = server.wait_state("victim", ("SUCCEEDED", "FAILED"), timeout=30)
    assert victim["state"] == "FAILED"
    assert "master-replica-0" in victim["errorMessage"] and "SIGKILL" in victim["errorMessage"]
    logs = [e["message"] for e in server.logs("survivor", "master-replica-0")]
    assert "hello from the trainer" in logs


def test_replica_vanished_while_server_down(server_factory, echo_package: Path, tmp_path: Path) -> None:
    server = server_factory()
    out = tmp_path / "gone.json"
    server.api("POST", JOBS, json=job_body("vanished", echo_package, ["--out", str(out), "--sleep", "300"]))
    pid = _wait_file(out)["pid"]
    server.kill9()
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # supervisor and trainer: no exit status left
    server.start()
    job = server.wait_state("vanished", ("SUCCEEDED", "FAILED"), timeout=30)
    assert job["state"] == "FAILED"
    assert "vanished" in job["errorMessage"] and "master-replica-0" in job["errorMessage"]
