"""The executor interface.

An executor starts replica processes and finds them again. Contract:

* :meth:`Executor.launch` starts one replica and returns a JSON-serializable *handle*; the
  scheduler stores the handle in the metadata store before doing anything else, so that a
  restarted control plane (a new ``Executor`` instance) can :meth:`poll` and
  :meth:`signal` the replica from the handle alone.
* Replicas outlive the control plane: stopping or killing the server never stops them.
* A replica writes its output, line by line, as JSON lines
  (``{"timestamp", "severity", "taskName", "message"}``) to ``launch.log_file``, and its exit
  status durably (written to a temporary file, fsynced, renamed) where :meth:`poll` reads it.
* Methods are called from the scheduler thread only; they must not block for long
  (``launch`` may take as long as starting a process).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
