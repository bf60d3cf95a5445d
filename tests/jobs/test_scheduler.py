"""The scheduler against a fake executor, a temporary SQLite and a toy job kind that only the
tests define: every state of the job lifecycle, cancel, deadlines, a bad row, reconciliation,
and the race of a cancel landing between a pass's read and its write."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.fakes import FakeExecutor
from tests.jobs.toy_kinds import SleepKind

from mlengine.config import load_settings
from mlengine.errors import MLEngineError
from mlengine.jobs import lifecycle as states
from mlengine.jobs.kinds import KindRegistry
from mlengine.jobs.scheduler import Scheduler
from mlengine.jobs.service import JobService
from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow


class Harness:
    def __init__(self, home: Path, executor: FakeExecutor) -> None:
        self.settings = load_settings(home=home, cancel_grace_seconds=0.5)
        self.db = open_database(self.settings.resolved_database_url)
        self.repo = JobRepository(self.db)
        self.executor = executor
        self.kind = SleepKind()
        self.kinds = KindRegistry([self.kind])
        self.scheduler = Scheduler(self.settings, self.repo, executor, self.kinds)
        self.service = JobService(self.settings, self.repo, self.kinds, lambda: None)

    def submit(self, job_id: str, seconds: float = 1, **extra: Any) -> None:
        self.service.create("p", {"jobId": job_id, "sleepInput": {"seconds": seconds, **extra}})

    def job(self, job_id: str) -> JobRow:
        return self.repo.get("p", job_id)

    def until(self, job_id: str, predicate: Callable[[JobRow], bool], timeout: float = 10) -> JobRow:
        """Tick until ``predicate`` holds for the job (preparation runs on worker threads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.scheduler.tick()
            row = self.job(job_id)
            if predicate(row):
                return row
            time.sleep(0.01)
        raise AssertionError(f"job {job_id} is {self.job(job_id).state}")

    def running(self, job_id: str) -> JobRow:
        return self.until(job_id, lambda r: r.state == states.RUNNING)

    def pid(self, job_id: str) -> int:
        return int(self.repo.replicas(self.job(job_id).id)[0].handle["pid"])

    def service_log(self, job_id: str) -> str:
        path = self.settings.jobs_dir / "p" / job_id / "logs" / "service.jsonl"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, FakeExecutor())
    yield harness
    harness.scheduler.stop()
    harness.db.dispose()


def test_success(h: Harness) -> None:
    h.submit("a")
    assert h.job("a").state == states.QUEUED
    row = h.running("a")
    assert row.start_time is not None and row.scheduling["demand"]["cpus"] == 0.5
    launch = h.executor.launches[0]
    assert launch.task_name == "sleeper-replica-0" and "time.sleep(1)" in launch.argv[-1]
    h.executor.exit(h.pid("a"), 0)
    row = h.until("a", lambda r: r.state in states.TERMINAL)
    assert row.state == states.SUCCEEDED and row.end_time is not None
    assert "Job completed successfully." in h.service_log("a")
    assert h.service.get("p", "a")["sleepOutput"] == {"slept": False}


def test_failure_names_the_replica_and_status(h: Harness) -> None:
    h.submit("a")
    h.running("a")
    h.executor.exit(h.pid("a"), 3)
    row = h.until("a", lambda r: r.state in states.TERMINAL)
    assert row.state == states.FAILED
    assert "sleeper-replica-0 exited with a non-zero status of 3" in row.error_message


def test_vanished_replica_fails_the_job(h: Harness) -> None:
    h.submit("a")
    h.running("a")
    h.executor.vanish(h.pid("a"))
    row = h.until("a", lambda r: r.state in states.TERMINAL)
    assert row.state == states.FAILED and "its process vanished" in row.error_message


def test_cancel_queued_and_running(h: Harness) -> None:
    h.submit("q")
    h.service.cancel("p", "q")
    assert h.job("q").state == states.CANCELLED
    with pytest.raises(MLEngineError, match="Cannot cancel an already completed job."):
        h.service.cancel("p", "q")
    h.submit("r")
    h.running("r")
    h.service.cancel("p", "r")
    assert h.job("r").state == states.CANCELLING
    row = h.until("r", lambda r: r.state in states.TERMINAL)
    assert row.state == states.CANCELLED
    assert (h.pid("r"), 15) in h.executor.signals


def test_cancel_escalates_to_sigkill(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeExecutor(ignore_term=True))
    h.submit("r")
    h.running("r")
    h.service.cancel("p", "r")
    row = h.until("r", lambda r: r.state in states.TERMINAL)
    assert row.state == states.CANCELLED and (h.pid("r"), 9) in h.executor.signals


def test_deadlines(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeExecutor(cpus=0.5))  # room for one sleeper at a time
    h.submit("long", maxRunningSeconds=0.2)
    row = h.until("long", lambda r: r.state in states.TERMINAL)
    assert row.state == states.CANCELLED and "maxRunningTime (0.2s)" in row.error_message
    assert row.start_time is not None
    h.submit("blocker")  # holds the only slot, no deadline
    h.running("blocker")
    h.submit("waits", maxWaitSeconds=0.3)
    row = h.until("waits", lambda r: r.state in states.TERMINAL)
    assert row.state == states.CANCELLED and "maxWaitTime (0.3s)" in row.error_message
    assert row.start_time is None and h.job("blocker").state == states.RUNNING


def test_a_job_that_can_never_fit_fails_at_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeExecutor(cpus=0.25))
    h.submit("big")
    row = h.until("big", lambda r: r.state in states.TERMINAL)
    assert row.state == states.FAILED and "can never run here" in row.error_message


def test_a_bad_row_fails_alone_and_the_pass_goes_on(h: Harness) -> None:
    h.repo.create("p", "ghost", kind="vanished-kind", state=states.RUNNING, input={}, labels={})
    h.submit("ok")
    row = h.running("ok")
    ghost = h.job("ghost")
    assert ghost.state == states.FAILED and "'vanished-kind' is not known" in ghost.error_message
    assert row.state == states.RUNNING


def test_reconcile_after_a_restart(h: Harness) -> None:
    h.submit("mid")
    h.running("mid")
    h.submit("prep")
    prep = h.job("prep")
    h.repo.update(prep.id, lambda r: setattr(r, "state", states.PREPARING))  # a server died preparing it
    h.repo.update(h.job("mid").id, lambda r: setattr(r, "state", states.PREPARING))  # ... or launching it
    h.scheduler.reconcile()
    assert h.job("prep").state == states.QUEUED and "preparing again" in h.service_log("prep")
    assert h.job("mid").state == states.RUNNING


def test_cancel_between_read_and_write_is_a_logged_no_op_100_times(h: Harness,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The API cancels a job after the pass read it RUNNING and saw its replica exit 0, before
    the pass writes SUCCEEDED: the write is skipped (logged), never an exception, and the rest
    of the pass still runs (a queued job starts in the same pass)."""
    caplog.set_level("INFO", logger="mlengine.lifecycle")
    real_poll = h.executor.poll
    for i in range(100):
        racer, follower = f"race{i}", f"next{i}"
        h.submit(racer)
        h.running(racer)
        pid = h.pid(racer)
        h.executor.exit(pid, 0)
        h.submit(follower)

        def poll_then_cancel(handle: dict[str, Any], job_id: str = racer) -> Any:
            status = real_poll(handle)
            h.executor.poll = real_poll  # type: ignore[method-assign]
            h.service.cancel("p", job_id)  # lands between the pass's read and its write
            return status

        h.executor.poll = poll_then_cancel  # type: ignore[method-assign]
        h.scheduler.tick()  # must not raise
        assert h.job(racer).state == states.CANCELLING
        assert h.job(follower).state in (states.PREPARING, states.RUNNING), "the pass went on"
        assert h.until(racer, lambda r: r.state in states.TERMINAL).state == states.CANCELLED
        h.running(follower)
        h.executor.exit(h.pid(follower), 0)
        assert h.until(follower, lambda r: r.state in states.TERMINAL).state == states.SUCCEEDED
    skipped = [r for r in caplog.records if "skipped, the job changed meanwhile" in r.getMessage()]
    assert len(skipped) >= 100


def test_cancel_between_plan_and_start_is_a_no_op(h: Harness) -> None:
    real_plan = h.kind.plan

    def plan_then_cancel(job: JobRow) -> Any:
        h.service.cancel("p", job.job_id)
        return real_plan(job)

    h.kind.plan = plan_then_cancel  # type: ignore[method-assign]
    h.submit("a")
    h.scheduler.tick()
    assert h.job("a").state == states.CANCELLED and not h.executor.launches


def test_infrastructure_failures_are_retried_and_user_failures_are_not(h: Harness) -> None:
    h.submit("flaky", maxRetries=2)
    h.running("flaky")
    h.executor.exit(h.pid("flaky"), -9)  # killed by SIGKILL (OOM killer, a node lost...)
    row = h.until("flaky", lambda r: r.state == states.RUNNING and r.scheduling.get("attempt") == 2)
    assert h.service.get("p", "flaky")["attempt"] == 2
    assert "Retrying: attempt 2 of 3" in h.service_log("flaky")
    h.executor.vanish(h.pid("flaky"))
    h.until("flaky", lambda r: r.state == states.RUNNING and r.scheduling.get("attempt") == 3)
    h.executor.exit(h.pid("flaky"), -9)  # retries exhausted
    row = h.until("flaky", lambda r: r.state in states.TERMINAL)
    assert row.state == states.FAILED and "killed by signal SIGKILL" in row.error_message
    assert len(h.executor.launches) == 3

    h.submit("buggy", maxRetries=2)
    h.running("buggy")
    h.executor.exit(h.pid("buggy"), 1)  # the trainer's own failure: never retried
    row = h.until("buggy", lambda r: r.state in states.TERMINAL)
    assert row.state == states.FAILED and row.scheduling.get("attempt") == 1


def test_a_described_job_posts_again_as_a_new_one(h: Harness) -> None:
    """Output-only fields (mlengine's ``attempt`` and ``warnings`` included) are ignored on
    create, so ``describe --format json`` → edit jobId → create works; unknown fields are not."""
    h.submit("orig")
    described = dict(h.service.get("p", "orig"), attempt=2, warnings=["served by this server's Python"])
    described["jobId"] = "copy"
    created = h.service.create("p", described)
    assert created["jobId"] == "copy" and created["state"] == "QUEUED"
    assert "warnings" not in created or created["warnings"] != described["warnings"]
    with pytest.raises(MLEngineError, match="unknown field 'bogus'"):
        h.service.create("p", dict(described, jobId="copy2", bogus=1))
