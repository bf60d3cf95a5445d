"""The executor contract, run against every backend: local processes and a real Ray cluster.

Each test places a small job (gang reservation, ports), launches its replicas, and checks
exit statuses, logs, signals, handles that work from a fresh executor instance, and that
``release`` frees everything.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.raycluster import TestRay, start_cluster, use_in_this_process

from mlengine.config import load_settings
from mlengine.jobs.executors._base import Executor, Placement, ReplicaLaunch, ReplicaRequest
from mlengine.jobs.ports import parse_range
from mlengine.jobs.resources import Resources

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[TestRay]:
    cluster = start_cluster([(2, {"node_a": 1}), (2, {"node_b": 1})])
    use_in_this_process(cluster)
    try:
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


@pytest.fixture(params=["local", "ray"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="mle-"))
    if request.param == "local":
        settings = load_settings(home=home, executor="local")
        from mlengine.jobs.executors.local import LocalExecutor

        yield "local", (lambda: LocalExecutor(settings))
        return
    cluster = request.getfixturevalue("ray_cluster")
    settings = load_settings(home=home, executor="ray", ray_address=cluster.address)
    from mlengine.jobs.executors.ray import RayExecutor

    yield "ray", (lambda: RayExecutor(settings))


def place(executor: Executor, n: int, cpus: float = 1.0, key: str = "p/job") -> Placement:
    requests = [ReplicaRequest("master" if i == 0 else "worker", max(0, i - 1), Resources(cpus, 0, 0))
                for i in range(n)]
    return executor.place(key, requests, parse_range(None))


def launch(executor: Executor, placement: Placement, root: Path, position: int, code: str) -> dict[str, Any]:
    spec = placement.replicas[position]
    task = spec.task_name
    return executor.launch(ReplicaLaunch(
        job_key="p/job", task_name=task, argv=[sys.executable, "-c", code],
        env={"MLE_TEST_PORT": str(spec.port)}, cwd=root / task / "work",
        log_file=root / "logs" / f"{task}.jsonl", status_file=root / task / "status.json",
        placement=placement, position=position,
    ))


def wait_finished(executor: Executor, handle: dict[str, Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = executor.poll(handle)
        if status.finished:
            return status
        time.sleep(0.1)
    raise AssertionError(f"replica still running after {timeout}s")


def test_exit_status_logs_and_ports(backend: tuple[str, Any], tmp_path: Path) -> None:
    name, make = backend
    executor = make()
    placement = place(executor, 2)
    ports = [r.port for r in placement.replicas]
    assert len(set(ports)) == 2 and all(20000 <= p <= 32767 for p in ports)
    code = ("import os, socket, sys; s = socket.socket(); s.bind(('0.0.0.0', int(os.environ['MLE_TEST_PORT'])));"
            "print('listening', flush=True); print('bad news', file=sys.stderr, flush=True); sys.exit(3)")
    handles = [launch(executor, placement, tmp_path, i, code) for i in range(2)]
    for handle in handles:
        status = wait_finished(executor, handle)
        assert (status.state, status.exit_code) == ("exited", 3), status  # the port was free to bind
    lines = [json.loads(x) for x in (tmp_path / "logs" / "master-replica-0.jsonl").read_text().splitlines()]
    assert {(x["taskName"], x["severity"], x["message"]) for x in lines} >= {
        ("master-replica-0", "INFO", "listening"), ("master-replica-0", "ERROR", "bad news")}
    executor.release(placement.reservation)
    executor.release(placement.reservation)  # idempotent


def test_signal_and_handle_from_a_new_executor(backend: tuple[str, Any], tmp_path: Path) -> None:
    name, make = backend
    executor = make()
    placement = place(executor, 1, key="p/sig")
    handle = launch(executor, placement, tmp_path, 0, "import time; print('ready', flush=True); time.sleep(300)")
    json.dumps(handle)  # handles are JSON
    again = make()  # what a restarted control plane does: find the replica from its handle alone
    log = tmp_path / "logs" / "master-replica-0.jsonl"
    deadline = time.monotonic() + 90
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert again.group_alive(handle)
    assert again.poll(handle).state == "running"
    again.signal(handle, signal.SIGTERM)
    status = wait_finished(again, handle)
    assert status.state == "exited" and status.exit_code == -signal.SIGTERM
    assert not again.group_alive(handle)
    again.release(placement.reservation)


# Only Ray holds resources between jobs (placement groups); the local executor has nothing to
# release, so this case runs on Ray alone instead of being skipped.
@pytest.mark.parametrize("backend", ["ray"], indirect=True)
def test_release_frees_everything_and_kills_replicas(backend: tuple[str, Any], tmp_path: Path) -> None:
    _name, make = backend
    executor = make()
    import ray

    placement = place(executor, 4, key="p/rel")
    nodes = set(placement.reservation["nodes"].values())
    assert len(nodes) == 2, "4 replicas of 1 CPU on two 2-CPU nodes must use both nodes"
    assert ray.available_resources().get("CPU", 0) < 0.5
    handles = [launch(executor, placement, tmp_path, i, "import time; time.sleep(300)") for i in range(4)]
    executor.release(placement.reservation)
    for handle in handles:
        status = wait_finished(executor, handle, timeout=60)
        assert status.finished
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 4
