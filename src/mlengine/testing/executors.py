"""The executor contract (:mod:`mlengine.jobs.executors._base`) as a test suite every backend runs.

Subclass :class:`ExecutorConformance` in a test module and provide the ``make_executor``
fixture: a callable returning a NEW executor instance each call, all bound to the same
backend (what a restarted control plane does). Each test places a small job (gang reservation,
ports), launches its replicas, and checks exit statuses, logs, signals, and handles that work
from a fresh executor instance::

    class TestMyExecutor(ExecutorConformance):
        @pytest.fixture
        def make_executor(self, tmp_path):
            return lambda: MyExecutor(load_settings(home=tmp_path))
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlengine.jobs.executors._base import Executor, Placement, ReplicaLaunch, ReplicaRequest
from mlengine.jobs.ports import parse_range
from mlengine.jobs.resources import Resources

MakeExecutor = Callable[[], Executor]


def place(executor: Executor, n: int, cpus: float = 1.0, key: str = "p/job") -> Placement:
    """Reserve ``n`` replicas (a master and workers) of ``cpus`` each."""
    requests = [ReplicaRequest("master" if i == 0 else "worker", max(0, i - 1), Resources(cpus, 0, 0))
                for i in range(n)]
    return executor.place(key, requests, parse_range(None))


def launch(executor: Executor, placement: Placement, root: Path, position: int, code: str) -> dict[str, Any]:
    """Launch replica ``position`` running Python ``code``; its port is in ``MLE_TEST_PORT``."""
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


class ExecutorConformance:
    """Tests every executor passes; subclasses provide the ``make_executor`` fixture."""

    def test_exit_status_logs_and_ports(self, make_executor: MakeExecutor, tmp_path: Path) -> None:
        executor = make_executor()
        placement = place(executor, 2)
        ports = [r.port for r in placement.replicas]
        assert len(set(ports)) == 2 and all(20000 <= p <= 32767 for p in ports)
        code = ("import os, socket, sys; s = socket.socket(); "
                "s.bind(('0.0.0.0', int(os.environ['MLE_TEST_PORT'])));"
                "print('listening', flush=True); print('bad news', file=sys.stderr, flush=True); sys.exit(3)")
        handles = [launch(executor, placement, tmp_path, i, code) for i in range(2)]
        for handle in handles:
            status = wait_finished(executor, handle)
            assert (status.state, status.exit_code) == ("exited", 3), status  # the port was free to bind
            assert status.failed and "non-zero status of 3" in status.describe("x")
        lines = [json.loads(x) for x in (tmp_path / "logs" / "master-replica-0.jsonl").read_text().splitlines()]
        assert {(x["taskName"], x["severity"], x["message"]) for x in lines} >= {
            ("master-replica-0", "INFO", "listening"), ("master-replica-0", "ERROR", "bad news")}
        executor.release(placement.reservation)
        executor.release(placement.reservation)  # idempotent

    def test_signal_and_handle_from_a_new_executor(self, make_executor: MakeExecutor, tmp_path: Path) -> None:
        executor = make_executor()
        placement = place(executor, 1, key="p/sig")
        handle = launch(executor, placement, tmp_path, 0, "import time; print('ready', flush=True); time.sleep(300)")
        json.dumps(handle)  # handles are JSON
        again = make_executor()  # what a restarted control plane does: find the replica from its handle alone
        log = tmp_path / "logs" / "master-replica-0.jsonl"
        deadline = time.monotonic() + 90
        while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert again.group_alive(handle)
        assert again.poll(handle).state == "running"
        again.signal(handle, signal.SIGTERM)
        status = wait_finished(again, handle)
        assert status.state == "exited" and status.exit_code == -signal.SIGTERM
        assert "killed by signal SIGTERM" in status.describe("master-replica-0")
        assert not again.group_alive(handle)
        again.release(placement.reservation)

    def test_capacity_is_positive(self, make_executor: MakeExecutor) -> None:
        capacity = make_executor().capacity()
        assert capacity.total.cpus > 0 and capacity.label
        assert all(node.fits_in(capacity.total) for node in capacity.nodes)
