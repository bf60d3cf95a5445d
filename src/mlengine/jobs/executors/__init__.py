"""Executors run replicas: ``local`` (processes on this machine) and ``ray`` (a Ray cluster).

Pick one with :func:`create_executor` from the ``MLE_EXECUTOR`` setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlengine.errors import Code, MLEngineError
from mlengine.jobs.executors._base import (
    Executor,
    Placement,
    ReplicaLaunch,
    ReplicaRequest,
    ReplicaSpec,
    ReplicaStatus,
)

if TYPE_CHECKING:
    from mlengine.config import Settings

__all__ = ["Executor", "Placement", "ReplicaLaunch", "ReplicaRequest", "ReplicaSpec", "ReplicaStatus",
           "create_executor"]

EXECUTORS = ("local", "ray")


def create_executor(settings: Settings) -> Executor:
    if settings.executor == "local":
        from mlengine.jobs.executors.local import LocalExecutor

        return LocalExecutor(settings)
    if settings.executor == "ray":
        from mlengine.jobs.executors.ray import RayExecutor

        return RayExecutor(settings)
    raise MLEngineError(
        Code.INVALID_ARGUMENT,
        f"Unknown executor {settings.executor!r}; valid executors: {', '.join(EXECUTORS)}",
    )
