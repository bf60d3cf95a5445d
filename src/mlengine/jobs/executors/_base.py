"""The executor interface.

An executor starts replica processes and finds them again. Contract:

* :meth:`Executor.launch` starts one replica and returns a JSON-serializable *handle*; the
  scheduler stores the handle in the metadata store before doing anything else, so that a
  restarted control plane (a new ``Executor`` instance) can :meth:`poll` and
  :meth:`signal` the replica from the handle alone.
* Replicas outlive the control plane: stopping or killing the server never stops them.
* User code is untrusted: a replica's environment is ``launch.env`` on top of only those
  variables of the executor's host environment that ``launch.inherit_env`` names
  (:func:`mlengine.core.sandbox.replica_environment`), and the supervisor is started with
  ``python -I`` (the job's ``PYTHONPATH`` and working directory must not shadow mlengine's own
  modules in a process that is not confined) and ``--sandbox launch.sandbox.to_json()``, so that
  it confines the trainer (:mod:`mlengine.core.sandbox`) on the machine that runs it.
* A replica writes its output, line by line, as JSON lines
  (``{"timestamp", "severity", "taskName", "message"}``) to ``launch.log_file``, and its exit
  status durably (written to a temporary file, fsynced, renamed) where :meth:`poll` reads it.
* Methods are called from the scheduler thread only; they must not block for long
  (``launch`` may take as long as starting a process; ``place`` as long as reserving the
  job's resources, e.g. a Ray placement group).
* Distributed jobs: :meth:`Executor.place` runs first, once per job, and reserves everything
  the job's replicas need, all or nothing (gang scheduling): resources and, for each
  replica, the host and a held port it will listen on. Its ``reservation`` is persisted in the
  job record and handed back to :meth:`Executor.release` when the job ends, from any
  (possibly restarted) control plane; ``release`` frees whatever is left and is idempotent.
* :meth:`Executor.capacity` is what the executor can hand out, in all and per node;
  :meth:`Executor.resource_mode` says how replicas count against it (see
  :mod:`mlengine.jobs.capacity`).
"""

from __future__ import annotations

import abc
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlengine.core.sandbox import INHERITED_ENV, SandboxPolicy
from mlengine.jobs.resources import Capacity, Resources

if TYPE_CHECKING:
    from mlengine.jobs.ports import PortReservation


@dataclass(frozen=True)
class ReplicaSpec:
    """One process of a job: its task type (``master``/``chief``/``worker``/``ps``/``evaluator``)
    and index, and the address it listens on for the cluster."""

    task_type: str
    index: int
    host: str
    port: int

    @property
    def task_name(self) -> str:
        """The name logs and ``--task-name`` use, as AI Platform: ``master-replica-0``."""
        return f"{self.task_type}-replica-{self.index}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ReplicaLaunch:
    """Everything needed to start one replica."""

    job_key: str
    task_name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_file: Path
    status_file: Path
    cpus: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The job's :class:`Placement` (from :meth:`Executor.place`) and this replica's index in it.
    placement: Placement | None = None
    position: int = 0
    #: How the supervisor confines the trainer (None: not at all, e.g. engine-owned processes).
    sandbox: SandboxPolicy | None = None
    #: What the replica inherits from the host's environment (names, ``PREFIX*`` patterns).
    inherit_env: tuple[str, ...] = INHERITED_ENV


@dataclass(frozen=True)
class ReplicaRequest:
    """One replica a job needs placed: ``master``/``chief``/``worker``/``ps``/``evaluator``."""

    task_type: str
    index: int
    resources: Resources

    @property
    def task_name(self) -> str:
        return f"{self.task_type}-replica-{self.index}"


@dataclass
class Placement:
    """Where a job's replicas will run, reserved all at once by :meth:`Executor.place`."""

    replicas: list[ReplicaSpec]
    #: JSON, persisted in the job record; handed back to :meth:`Executor.release`.
    reservation: dict[str, Any] = field(default_factory=dict)
    #: Ports held in this process until each replica is launched (local executor).
    ports: PortReservation | None = None


@dataclass(frozen=True)
class ReplicaStatus:
    """``running``; ``exited`` with ``exit_code`` (negative: killed by that signal); or
    ``lost``: gone without leaving an exit status (``message`` says why)."""

    state: str
    exit_code: int | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def failed(self) -> bool:
        return self.state == "lost" or (self.state == "exited" and self.exit_code != 0)

    def describe(self, task_name: str) -> str:
        """Why replica ``task_name`` ended, in words (for a failed one)."""
        if self.state == "lost":
            return f"The replica {task_name} is gone: {self.message}."
        code = self.exit_code
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"The replica {task_name} was killed by signal {name}."
        return f"The replica {task_name} exited with a non-zero status of {code}."


class Executor(abc.ABC):
    name: str = "base"
    #: Called (from any thread) when a replica may have finished, so the scheduler looks now
    #: instead of at its next periodic pass.
    notify: Callable[[], None] | None = None

    @abc.abstractmethod
    def launch(self, launch: ReplicaLaunch) -> dict[str, Any]:
        """Start a replica; return its handle."""

    @abc.abstractmethod
    def poll(self, handle: dict[str, Any]) -> ReplicaStatus:
        """The replica's current status, from its handle alone."""

    @abc.abstractmethod
    def signal(self, handle: dict[str, Any], signum: int) -> None:
        """Send ``signum`` to the replica and everything it started; no error if gone."""

    def group_alive(self, handle: dict[str, Any]) -> bool:
        """Whether anything the replica started is still running (cancel waits for none)."""
        return not self.poll(handle).finished

    def close(self) -> None:  # noqa: B027 - optional hook, most executors hold nothing
        """Release executor resources (not the replicas)."""

    def capacity(self) -> Capacity:
        """What this executor can hand out to replicas, in all and per node (default: this
        machine, as the local executor counts it)."""
        from mlengine.jobs.resources import machine_capacity

        return machine_capacity(getattr(self, "settings", None))

    def resource_mode(self) -> str:
        """``process`` or ``machine``: how a replica's machine type counts against capacity."""
        mode = getattr(getattr(self, "settings", None), "resource_mode", "auto")
        return "process" if mode == "auto" else str(mode)

    def place(self, job_key: str, requests: list[ReplicaRequest], port_range: tuple[int, int]) -> Placement:
        """Reserve the job's replicas on this machine (127.0.0.1, one held port each)."""
        from mlengine.jobs.ports import reserve_ports

        ports = reserve_ports(len(requests), port_range)
        specs = [ReplicaSpec(r.task_type, r.index, "127.0.0.1", p) for r, p in zip(requests, ports.ports, strict=True)]
        return Placement(specs, {}, ports)

    def release(self, reservation: dict[str, Any]) -> None:  # noqa: B027 - nothing to free by default
        """Free what :meth:`place` reserved for a job that has ended (idempotent)."""
