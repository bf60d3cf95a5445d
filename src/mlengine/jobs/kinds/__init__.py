"""Job kinds: the :class:`JobKind` interface (:mod:`._base`) and the registry the server builds.

The server registers the built-in kinds (tuning, training, trial, batch_prediction); ``MLE_JOB_KINDS`` adds
others by dotted path (``package.module:Class``), each constructed with the server's
:class:`KindContext`. The first registered kind that accepts a ``Job`` body takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlengine.core.plugins import load_plugin
from mlengine.errors import invalid
from mlengine.jobs.kinds._base import JobKind, Outcome, ReplicaCommand, ReplicaResult, SandboxPaths, Submission

if TYPE_CHECKING:
    from mlengine.config import Settings
    from mlengine.store.database import Database
    from mlengine.store.jobs import JobRepository

__all__ = ["JobKind", "KindContext", "KindRegistry", "Outcome", "ReplicaCommand", "ReplicaResult",
           "SandboxPaths", "Submission", "load_kind"]


@dataclass
class KindContext:
    """What a kind may use: settings, the store, and a way to wake the scheduler."""

    settings: Settings
    repo: JobRepository
    db: Database
    wake: Callable[[], None]


class KindRegistry:
    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: list[JobKind] = []
        for kind in kinds:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        if any(k.name == kind.name for k in self._kinds):
            raise ValueError(f"job kind {kind.name!r} is registered twice")
        self._kinds.append(kind)

    def __iter__(self) -> Any:
        return iter(self._kinds)

    def get(self, name: str) -> JobKind | None:
        return next((k for k in self._kinds if k.name == name), None)

    def controllers(self) -> list[JobKind]:
        return [k for k in self._kinds if k.controller]

    def fields(self) -> set[str]:
        """The ``Job`` fields some kind reads or writes."""
        return {f for k in self._kinds for f in (k.input_field, k.output_field)}

    def for_body(self, body: Mapping[str, Any]) -> JobKind:
        for kind in self._kinds:
            if kind.accepts(body):
                return kind
        inputs = sorted({k.input_field for k in self._kinds if k.listed})
        raise invalid("job", f"a Job needs one of {', '.join(inputs)}")


def load_kind(path: str, context: KindContext) -> JobKind:
    """Construct the kind class at ``package.module:Class`` with ``context``."""
    plugin: JobKind = load_plugin(path, JobKind, "MLE_JOB_KINDS", context)
    return plugin
