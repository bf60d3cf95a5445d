"""The one home of resource states: jobs, replicas and model versions, with their transitions.

Job states are the ``ml`` v1 API's::

    QUEUED ──► PREPARING ──► RUNNING ──► SUCCEEDED | FAILED
       │            │            │
       └────────────┴────────────┴──► CANCELLING ──► CANCELLED
       (a QUEUED job is cancelled at once; any non-terminal job may also end FAILED;
        a PREPARING job goes back to QUEUED when a restarted server must prepare it again;
        a RUNNING job goes back to QUEUED to be retried after an infrastructure failure)

Contract
--------
- Every state change of a stored job goes through :func:`transition` (or the repository's
  compare-and-set it wraps): the change is applied only if the row is still in the state the
  caller read. A caller that lost a race (an API cancel landed between its read and its write)
  gets ``None`` back and the race is logged; it is never an exception, so one job can never
  abort a scheduler pass. A transition the table forbids from the state actually read is a
  bug and raises :class:`IllegalTransition`.
- Terminal states are final: nothing leaves them.
- Replica and version states are enums here too so that every module names them the same way.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mlengine.core.timeutil import utcnow

if TYPE_CHECKING:
    from mlengine.store.jobs import JobRepository
    from mlengine.store.models import JobRow

log = logging.getLogger("mlengine.lifecycle")


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


class ReplicaState(str, enum.Enum):
    LAUNCHING = "LAUNCHING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    LOST = "LOST"

    def __str__(self) -> str:
        return self.value


class VersionState(str, enum.Enum):
    CREATING = "CREATING"
    READY = "READY"
    UPDATING = "UPDATING"
    DELETING = "DELETING"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value


# Plain-string aliases: rows store the value, and most code compares with these.
QUEUED = JobState.QUEUED.value
PREPARING = JobState.PREPARING.value
RUNNING = JobState.RUNNING.value
SUCCEEDED = JobState.SUCCEEDED.value
FAILED = JobState.FAILED.value
CANCELLING = JobState.CANCELLING.value
CANCELLED = JobState.CANCELLED.value

ACTIVE = (QUEUED, PREPARING, RUNNING, CANCELLING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
#: States that hold capacity.
HOLDING = (PREPARING, RUNNING, CANCELLING)

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PREPARING, CANCELLED, FAILED}),
    PREPARING: frozenset({RUNNING, QUEUED, CANCELLING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLING, QUEUED}),
    CANCELLING: frozenset({CANCELLED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

REPLICA_TRANSITIONS: dict[str, frozenset[str]] = {
    ReplicaState.LAUNCHING.value: frozenset({ReplicaState.RUNNING.value, ReplicaState.EXITED.value,
                                             ReplicaState.LOST.value}),
    ReplicaState.RUNNING.value: frozenset({ReplicaState.EXITED.value, ReplicaState.LOST.value}),
    ReplicaState.EXITED.value: frozenset(),
    ReplicaState.LOST.value: frozenset(),
}
REPLICA_FINISHED = (ReplicaState.EXITED.value, ReplicaState.LOST.value)

VERSION_TRANSITIONS: dict[str, frozenset[str]] = {
    VersionState.CREATING.value: frozenset({VersionState.READY.value, VersionState.FAILED.value,
                                            VersionState.DELETING.value}),
    VersionState.READY.value: frozenset({VersionState.UPDATING.value, VersionState.DELETING.value}),
    VersionState.UPDATING.value: frozenset({VersionState.READY.value, VersionState.FAILED.value,
                                            VersionState.DELETING.value}),
    VersionState.FAILED.value: frozenset({VersionState.DELETING.value}),
    VersionState.DELETING.value: frozenset({VersionState.FAILED.value}),
}


class IllegalTransition(RuntimeError):
    """A bug: the engine tried a transition the state diagram forbids."""


def allowed(current: str, new: str, table: dict[str, frozenset[str]] | None = None) -> bool:
    return new == current or new in (table or TRANSITIONS).get(current, frozenset())


def check_transition(current: str, new: str, table: dict[str, frozenset[str]] | None = None) -> None:
    if not allowed(current, new, table):
        raise IllegalTransition(f"state {current} cannot become {new}")


def transition(
    repo: JobRepository,
    job: JobRow,
    new: str,
    *,
    expect: Iterable[str] | None = None,
    error: str | None = None,
    change: Callable[[JobRow], None] | None = None,
) -> JobRow | None:
    """Move ``job`` to ``new`` if it is still in ``expect`` (default: the state ``job`` was read
    in); returns the updated row, or ``None`` when another writer changed the state first.

    Sets ``startTime`` on the first RUNNING, ``endTime`` on a terminal state, the error message
    if given, and applies ``change`` (more fields) in the same transaction.
    """
    expected = tuple(expect) if expect is not None else (job.state,)

    def apply(row: JobRow) -> bool:
        if row.state not in expected:
            return False
        check_transition(row.state, new)
        row.state = new
        now = utcnow()
        if new == RUNNING and row.start_time is None:
            row.start_time = now
        if new in TERMINAL:
            row.end_time = now
        if error is not None:
            row.error_message = error
        if change is not None:
            change(row)
        return True

    updated = repo.compare_and_set(job.id, apply)
    if updated is None:
        log.info("job %s/%s: %s -> %s skipped, the job changed meanwhile", job.project, job.job_id,
                 "|".join(expected), new)
    return updated


def describe(state: Any) -> str:
    return str(state.value if isinstance(state, enum.Enum) else state)
