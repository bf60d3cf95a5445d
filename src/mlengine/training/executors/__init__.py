"""Executors run replicas: ``local`` (processes on this machine) and ``ray`` (a Ray cluster).

Pick one with :func:`create_executor` from the ``MLE_EXECUTOR`` setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlengine.errors import Code, MLEngineError

if TYPE_CHECKING:
    from mlengine.config import Settings
    from mlengine.training.executors._base import Executor

EXECUTORS = ("local", "ray")


def create_executor(settings: Settings) -> Executor:
    if settings.executor == "local":
        from mlengine.training.executors.local import LocalExecutor

        return LocalExecutor(settings)
    if settings.executor == "ray":
        from mlengine.training.executors.ray import RayExecutor

        return RayExecutor(settings)
    raise MLEngineError(
        Code.INVALID_ARGUMENT,
        f"Unknown executor {settings.executor!r}; valid executors: {', '.join(EXECUTORS)}",
    )
