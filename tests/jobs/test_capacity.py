"""Capacity: a job larger than the local machine runs alone, oversubscribed, in process mode
(issue 10.2); machine mode, GPUs and executors that do not allow it keep "can never run here"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.fakes import FakeExecutor
from tests.jobs.test_scheduler import Harness

from mlengine.config import load_settings
from mlengine.jobs import capacity
from mlengine.jobs import lifecycle as states
from mlengine.jobs.executors import ReplicaRequest
from mlengine.jobs.executors.local import LocalExecutor
from mlengine.jobs.resources import Capacity, Resources
from mlengine.store.models import JobRow

ONE_MACHINE = Capacity(Resources(2, 16, 0), [Resources(2, 16, 0)], "two cores", oversubscribable=True)


def replicas(n: int, cpus: float = 8, gpus: int = 0) -> list[ReplicaRequest]:
    return [ReplicaRequest("worker", i, Resources(cpus, 30, gpus)) for i in range(n)]


def test_process_mode_runs_a_job_larger_than_the_machine_alone() -> None:
    verdict = capacity.assess(replicas(8), "process", ONE_MACHINE)  # STANDARD_1: 8 replicas
    assert verdict.never is None and verdict.alone and "8 CPUs asked, 2 there" in verdict.alone
    assert verdict.demand == Resources(8, 0, 0)
    assert verdict.fits_with(Resources(), ONE_MACHINE)
    assert not verdict.fits_with(Resources(0.5, 0, 0), ONE_MACHINE), "another job holds a slot"
    small = capacity.assess(replicas(2), "process", ONE_MACHINE)
    assert small.alone is None and small.fits_with(Resources(), ONE_MACHINE)


@pytest.mark.parametrize(("mode", "cap", "requests", "why"), [
    ("machine", ONE_MACHINE, replicas(8), "need 64 CPUs (has 2), 240 GB of memory (has 16)"),
    ("process", ONE_MACHINE, replicas(4, gpus=1), "4 GPUs (has 0)"),
    ("process", Capacity(Resources(2, 16, 0), [], "a Ray cluster"), replicas(4), "4 CPUs (has 2)"),
])
def test_the_refusal_stays_where_oversubscribing_is_wrong(mode: str, cap: Capacity,
                                                            requests: list[ReplicaRequest], why: str) -> None:
    verdict = capacity.assess(requests, mode, cap)
    assert verdict.alone is None and verdict.never and why in verdict.never


def test_only_the_local_executor_in_process_mode_oversubscribes(tmp_path: Path) -> None:
    assert LocalExecutor(load_settings(home=tmp_path, resource_mode="auto")).capacity().oversubscribable
    assert not LocalExecutor(load_settings(home=tmp_path, resource_mode="machine")).capacity().oversubscribable
    assert not FakeExecutor().capacity().oversubscribable


class OneMachine(FakeExecutor):
    """The fake executor as one machine in process mode (oversubscribable, 1 CPU slot)."""

    def capacity(self) -> Capacity:
        return Capacity(Resources(self.cpus, 64, 0), [Resources(self.cpus, 64, 0)], "one machine",
                        oversubscribable=True)

    def resource_mode(self) -> str:
        return "process"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, OneMachine(cpus=1.0))
    real_plan = harness.kind.plan

    def plan(job: JobRow) -> list[ReplicaRequest]:  # "wide*" jobs: 4 sleepers of 0.5 CPU each
        if job.job_id.startswith("wide"):
            return [ReplicaRequest("sleeper", i, Resources(0.5, 0, 0)) for i in range(4)]
        return real_plan(job)

    harness.kind.plan = plan  # type: ignore[method-assign]
    yield harness
    harness.scheduler.stop()
    harness.db.dispose()


def pids(h: Harness, job_id: str) -> list[int]:
    return [int(r.handle["pid"]) for r in h.repo.replicas(h.job(job_id).id)]


def settle(h: Harness, ticks: int = 20) -> None:
    import time

    for _ in range(ticks):
        h.scheduler.tick()
        time.sleep(0.01)


def test_an_oversubscribed_job_waits_its_turn_runs_alone_and_others_queue_behind_it(h: Harness) -> None:
    h.submit("small", seconds=60)
    h.running("small")
    h.submit("wide", seconds=60)
    h.submit("after", seconds=60)  # would fit beside "small", but comes after "wide" (FIFO)
    settle(h)
    assert h.job("wide").state == states.QUEUED and h.job("after").state == states.QUEUED
    h.executor.exit(pids(h, "small")[0], 0)
    wide = h.running("wide")
    assert wide.scheduling["oversubscribed"] is True and wide.scheduling["demand"]["cpus"] == 2.0
    assert "runs oversubscribed" in h.service_log("wide") and "runs alone" in h.service_log("wide")
    assert len(pids(h, "wide")) == 4
    settle(h)
    assert h.job("after").state == states.QUEUED, "nothing runs beside an oversubscribed job"
    for pid in pids(h, "wide"):
        h.executor.exit(pid, 0)
    after = h.running("after")
    assert "oversubscribed" not in after.scheduling and "oversubscribed" not in h.service_log("after")


def test_machine_mode_still_refuses(tmp_path: Path) -> None:
    class Machines(OneMachine):
        def resource_mode(self) -> str:
            return "machine"

    harness = Harness(tmp_path, Machines(cpus=0.25))
    try:
        harness.submit("big")
        row: Any = harness.until("big", lambda r: r.state in states.TERMINAL)
        assert row.state == states.FAILED and "can never run here" in row.error_message
    finally:
        harness.scheduler.stop()
        harness.db.dispose()
