"""The job kind interface: what makes a training job, a tuning trial or a batch prediction what
it is. The scheduler, capacity and executors know nothing of any kind.

Contract
--------
A :class:`JobKind` is stateless with respect to jobs (all per-job state is in the job row) and
is shared by the API threads and the scheduler thread, so its methods must be thread-safe.

Submission (API thread, before anything is stored):
  :meth:`JobKind.accepts` says whether a ``Job`` body is this kind's (by default: it holds the
  kind's ``input_field``, e.g. ``trainingInput``). :meth:`JobKind.validate` checks the body
  completely and returns a :class:`Submission`; it raises
  :class:`~mlengine.errors.MLEngineError` (``INVALID_ARGUMENT`` naming the field,
  ``NOT_FOUND``...) and must leave nothing behind when it does.

Running (scheduler thread and its preparation workers), for kinds whose jobs run replicas:
  1. :meth:`JobKind.plan` -- the replica plan: one :class:`~mlengine.jobs.executors.ReplicaRequest`
     (task type, index, resources asked) per replica, in launch order. An ``MLEngineError``
     fails the job with its message. An empty plan is valid only for controller kinds.
  2. :meth:`JobKind.prepare` -- what to fetch and install (packages, an environment); runs in a
     worker thread, may take minutes, logs progress with ``log``. Returns an opaque value
     handed back to :meth:`command`. ``MLEngineError`` fails the job with its message.
  3. :meth:`JobKind.command` -- argv, environment and working directory of one replica, given
     the whole :class:`~mlengine.jobs.executors.Placement` (hosts and ports of every replica).
  3b. :meth:`JobKind.sandbox_paths` -- what the replicas may read or write beyond what every
     replica gets (see :mod:`mlengine.jobs.sandboxing`: the whole filesystem readable except the
     server's private files; writable: their own directories, ``MLE_SANDBOX_WRITABLE``).
     Return paths the kind derived itself (the job's environment) or checked at ``validate``
     (a local ``jobDir``); entries inside the server's private files are granted only below the
     job's own directory (``paths.root``) or, read-only, ``MLE_HOME/envs``, and dropped (the
     job's log says so) otherwise.
  4. :meth:`JobKind.outcome` -- on every pass while the job runs, from its replicas' results
     so far: ``None`` (still running) or the terminal :class:`Outcome`. Replicas left running
     when the job ends are stopped by the scheduler (SIGTERM, then SIGKILL).

Controller kinds (``controller = True``, e.g. tuning) run no replicas of their own: they drive
other jobs. The scheduler never prepares, launches, monitors or reconciles their jobs; it calls
:meth:`JobKind.drive` once per pass, in its thread, with every active job (of all kinds), and the
kind moves its jobs through the lifecycle itself (:func:`mlengine.jobs.lifecycle.transition`).
Cancellation and deadlines still go through the scheduler's one path: a controller sees its job
CANCELLING (with the reason as its error message) and ends it when its children are done.

Rendering (any thread): :meth:`JobKind.render` returns the kind's fields of the ``Job``
resource (``{"trainingInput": ..., "trainingOutput": ...}``), plus mlengine's ``warnings``: the
list a kind recorded in ``kind_state["warnings"]`` at submission (e.g. a runtimeVersion served
by the server's own packages, :mod:`mlengine.core.runtimes`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mlengine.jobs.executors import Placement, ReplicaRequest, ReplicaStatus
    from mlengine.jobs.paths import JobPaths
    from mlengine.store.models import JobRow

Log = Callable[..., None]


@dataclass(frozen=True)
class Submission:
    """A validated job body, ready to be stored."""

    job_id: str
    input: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    #: ``scheduling.maxRunningTime`` / ``maxWaitTime`` in seconds (the scheduler enforces them).
    max_running_seconds: float | None = None
    max_wait_seconds: float | None = None
    output: dict[str, Any] = field(default_factory=dict)
    kind_state: dict[str, Any] = field(default_factory=dict)
    #: How often the job is started again after an infrastructure failure (a replica killed by
    #: a signal or vanished; never the user code's own non-zero exit).
    max_retries: int = 0


@dataclass(frozen=True)
class ReplicaCommand:
    """How to start one replica."""

    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class SandboxPaths:
    """What a kind's replicas may read (``readable``) and write (``writable``, readable too)
    beyond the defaults; absolute paths."""

    readable: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicaResult:
    """One replica of a running job, as the scheduler last saw it."""

    task_name: str
    task_type: str
    status: ReplicaStatus


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``SUCCEEDED`` or ``FAILED`` (with the message users see)."""

    state: str
    message: str = ""


class JobKind(abc.ABC):
    #: Stored in ``jobs.kind``; unique among registered kinds.
    name: ClassVar[str]
    #: The ``Job`` fields this kind reads and writes (``trainingInput``/``trainingOutput``).
    input_field: ClassVar[str]
    output_field: ClassVar[str]
    #: Whether ``jobs.list`` shows its jobs (trials are reached through their tuning job).
    listed: ClassVar[bool] = True
    #: Controller kinds drive other jobs and run no replicas (see the module contract).
    controller: ClassVar[bool] = False

    # Submission -----------------------------------------------------------------------------
    def accepts(self, body: Mapping[str, Any]) -> bool:
        return self.input_field in body

    @abc.abstractmethod
    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        """The complete check of a ``Job`` body (see the module contract)."""

    # Running --------------------------------------------------------------------------------
    def plan(self, job: JobRow) -> list[ReplicaRequest]:
        """The replicas the job needs, in launch order."""
        return []

    def prepare(self, job: JobRow, paths: JobPaths, log: Log) -> Any:
        """Fetch and install what the job's replicas need (worker thread)."""
        return None

    def command(self, job: JobRow, prepared: Any, placement: Placement, position: int,
                paths: JobPaths) -> ReplicaCommand:
        """argv and environment of replica ``placement.replicas[position]``."""
        raise NotImplementedError(f"job kind {self.name} runs no replicas")

    def workdir(self, job: JobRow, paths: JobPaths, task_name: str) -> Path:
        return paths.workdir(task_name)

    def sandbox_paths(self, job: JobRow, prepared: Any, paths: JobPaths) -> SandboxPaths:
        """Extra paths the job's replicas may read or write (see the module contract)."""
        return SandboxPaths()

    def outcome(self, job: JobRow, replicas: list[ReplicaResult]) -> Outcome | None:
        """Default rule: any replica that failed fails the job; all exited 0 = success."""
        from mlengine.jobs.lifecycle import FAILED, SUCCEEDED

        for replica in replicas:
            if replica.status.failed:
                return Outcome(FAILED, replica.status.describe(replica.task_name))
        if replicas and all(r.status.finished for r in replicas):
            return Outcome(SUCCEEDED)
        return None

    # Controllers ----------------------------------------------------------------------------
    def drive(self, active: list[JobRow]) -> None:  # noqa: B027 - only controllers drive
        """One pass over this controller kind's jobs (``active``: every active job)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """The server is stopping."""

    # Rendering ------------------------------------------------------------------------------
    def render(self, job: JobRow) -> dict[str, Any]:
        fields: dict[str, Any] = {self.input_field: job.input or {}, self.output_field: job.output or {}}
        warnings = (job.kind_state or {}).get("warnings")
        if warnings:
            fields["warnings"] = list(warnings)
        return fields
