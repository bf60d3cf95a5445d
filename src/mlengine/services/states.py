"""The one home of service states and their transitions.

::

      create / :start / a proxied request to an idle-stopped service
                 │
                 ▼        healthy                      exits, or fails its health checks
   ┌───────► STARTING ─────────────► RUNNING ────────────────┐
   │            │  ▲                   │                     │
   │            │  └───────────────────┼── restart (backoff) ┤ under the restart limit
   │            │                      │                     │
   │            │ fails before it was  │ idle timeout,       └──► FAILED (over the limit,
   │            │ ever healthy, or     │ :stop                     or never healthy;
   │            │ over the limit       ▼                           errorMessage = reason
   │            └─────────────────► STOPPING ── process gone ──►  + the log's last lines)
   │                                                  │
   │                                                  ▼
   └──────────────────────────────────────────── STOPPED (stopReason IDLE | USER)

   DELETE: any state ──► DELETING ── process gone ──► (row removed)

A STARTING service either has a process (waiting for its first healthy check) or waits for
``handle.restartAt`` (backoff) to launch one.

Contract
--------
- Only :mod:`mlengine.services.manager` changes a service's state, always through
  :func:`check_transition` against :data:`TRANSITIONS`; a transition the table forbids is a bug
  (:class:`~mlengine.jobs.lifecycle.IllegalTransition`).
- ``stopReason`` is ``IDLE`` when the manager stopped an idle service (a proxied request starts
  it again) and ``USER`` after ``:stop`` (only ``:start`` starts it again).
"""

from __future__ import annotations

import enum

from mlengine.jobs.lifecycle import IllegalTransition, allowed

__all__ = ["ACTIVE", "TRANSITIONS", "IllegalTransition", "ServiceState", "StopReason", "check_transition"]


class ServiceState(str, enum.Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    DELETING = "DELETING"

    def __str__(self) -> str:
        return self.value


class StopReason(str, enum.Enum):
    IDLE = "IDLE"
    USER = "USER"

    def __str__(self) -> str:
        return self.value


STARTING = ServiceState.STARTING.value
RUNNING = ServiceState.RUNNING.value
STOPPING = ServiceState.STOPPING.value
STOPPED = ServiceState.STOPPED.value
FAILED = ServiceState.FAILED.value
DELETING = ServiceState.DELETING.value

#: States in which a service may have a process.
ACTIVE = (STARTING, RUNNING, STOPPING, DELETING)

TRANSITIONS: dict[str, frozenset[str]] = {
    STARTING: frozenset({RUNNING, STOPPING, STOPPED, FAILED, DELETING}),
    RUNNING: frozenset({STARTING, STOPPING, STOPPED, FAILED, DELETING}),
    STOPPING: frozenset({STOPPED, DELETING}),
    STOPPED: frozenset({STARTING, DELETING}),
    FAILED: frozenset({STARTING, DELETING}),
    DELETING: frozenset(),
}


def check_transition(current: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless a service may go from ``current`` to ``new``."""
    if not allowed(current, new, TRANSITIONS):
        raise IllegalTransition(f"service state {current} cannot become {new}")
