"""Job states (user-facing, as the ml v1 API names them) and the allowed transitions.

    QUEUED ──► PREPARING ──► RUNNING ──► SUCCEEDED | FAILED
       │            │            │
       └────────────┴────────────┴──► CANCELLING ──► CANCELLED
       (a QUEUED job is cancelled at once; any non-terminal job may also end FAILED)
"""

from __future__ import annotations

QUEUED = "QUEUED"
PREPARING = "PREPARING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLING = "CANCELLING"
CANCELLED = "CANCELLED"

ACTIVE = (QUEUED, PREPARING, RUNNING, CANCELLING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
#: States that hold capacity.
HOLDING = (PREPARING, RUNNING, CANCELLING)

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PREPARING, CANCELLED, FAILED}),
    PREPARING: frozenset({RUNNING, QUEUED, CANCELLING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLING}),
    CANCELLING: frozenset({CANCELLED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: the engine tried a transition the state diagram forbids."""


def check_transition(current: str, new: str) -> None:
    if new != current and new not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"job state {current} cannot become {new}")
