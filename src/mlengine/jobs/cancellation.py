"""The one cancel path and the one deadline check, for jobs of every kind.

:func:`request_cancel` serves the API's cancel, the deadlines and a tuning job stopping its
trials alike; :func:`deadline_passed` is checked by the scheduler once per pass for every
active job, controllers' included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from mlengine.core.timeutil import as_utc, utcnow
from mlengine.jobs import lifecycle as states
from mlengine.jobs.scheduling import SchedulingState
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow


def request_cancel(repo: JobRepository, job: JobRow, error: str | None, *, controller: bool,
                   change: Callable[[JobRow], None] | None = None) -> JobRow | None:
    """The one cancel path (API cancel, deadlines, a tuning job stopping its trials).

    A QUEUED job of a non-controller kind ends CANCELLED at once; any other active job goes
    CANCELLING (the scheduler, or its controller, finishes it). Returns the row after the
    change, the unchanged row if it was already CANCELLING, or ``None`` if it had ended.
    """

    def apply(row: JobRow) -> bool:
        if row.state in states.TERMINAL:
            return False
        if row.state == states.CANCELLING:
            return True
        new = states.CANCELLED if row.state == states.QUEUED and not controller else states.CANCELLING
        states.check_transition(row.state, new)
        row.state = new
        if new == states.CANCELLED:
            row.end_time = utcnow()
        if error and not row.error_message:
            row.error_message = error
        if change is not None:
            change(row)
        return True

    return repo.compare_and_set(job.id, apply)


def deadline_passed(job: JobRow, now: dt.datetime) -> str | None:
    """Why ``job`` must be cancelled now, or None: ``scheduling.maxWaitTime`` until it runs,
    ``maxRunningTime`` once it does."""
    sched = SchedulingState.of(job.scheduling)
    if job.state in (states.QUEUED, states.PREPARING) and job.start_time is None and sched.max_wait_seconds:
        created = as_utc(job.create_time)
        if created and (now - created).total_seconds() > sched.max_wait_seconds:
            return (f"The job waited longer than scheduling.maxWaitTime ({sched.max_wait_seconds:g}s) "
                    "for capacity and was cancelled.")
    elif job.state == states.RUNNING and sched.max_running_seconds:
        started = as_utc(job.start_time)
        if started and (now - started).total_seconds() > sched.max_running_seconds:
            return (f"The job ran longer than scheduling.maxRunningTime ({sched.max_running_seconds:g}s) "
                    "and was cancelled.")
    return None
