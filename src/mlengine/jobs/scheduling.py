"""The scheduler's private record of a job: typed, and written only by :mod:`mlengine.jobs`.

Stored as JSON in ``jobs.scheduling``; users never see it (the API renders the job's kind
fields, state and times). Unknown keys written by newer versions are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

_KEYS = {
    "max_running_seconds": "maxRunningSeconds",
    "max_wait_seconds": "maxWaitSeconds",
    "demand": "demand",
    "placement": "placement",
    "term_sent_at": "termSentAt",
    "max_retries": "maxRetries",
    "attempt": "attempt",
}


@dataclass(frozen=True)
class SchedulingState:
    #: ``scheduling.maxRunningTime`` / ``maxWaitTime`` of the job, in seconds.
    max_running_seconds: float | None = None
    max_wait_seconds: float | None = None
    #: What the job holds while PREPARING/RUNNING/CANCELLING (:class:`Resources` as JSON).
    demand: dict[str, Any] | None = None
    #: The executor's reservation (:meth:`Executor.place`), handed back to ``release``.
    placement: dict[str, Any] | None = None
    #: When SIGTERM went to the replicas of a cancelled job (epoch seconds).
    term_sent_at: float | None = None
    #: Restarts allowed after infrastructure failures, and the attempt running now (1-based).
    max_retries: int | None = None
    attempt: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> SchedulingState:
        raw = dict(raw or {})
        values = {name: raw.pop(key, None) for name, key in _KEYS.items()}
        return cls(**values, extra=raw)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in fields(self):
            if f.name in _KEYS:
                value = getattr(self, f.name)
                if value is not None:
                    out[_KEYS[f.name]] = value
        return out
