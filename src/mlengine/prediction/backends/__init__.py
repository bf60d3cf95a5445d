"""Replica backends by name (``MLE_SERVING_BACKEND``); the interface is in :mod:`._base`."""

from __future__ import annotations

import importlib

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError
from mlengine.prediction.backends._base import (
    ReplicaBackend,
    ReplicaChannel,
    ReplicaOwner,
    ReplicaStartError,
    ReplicaTemplate,
    Result,
)

#: Backend name → ``module:Class`` (imported on use, so a Ray backend costs nothing until chosen).
BACKENDS: dict[str, str] = {
    "local": "mlengine.prediction.backends.local:LocalBackend",
    "ray": "mlengine.prediction.backends.ray:RayBackend",
}

__all__ = ["BACKENDS", "ReplicaBackend", "ReplicaChannel", "ReplicaOwner", "ReplicaStartError",
           "ReplicaTemplate", "Result", "create_backend"]


def create_backend(settings: Settings) -> ReplicaBackend:
    """The backend ``settings.serving_backend`` names; INVALID_ARGUMENT listing the valid ones."""
    path = BACKENDS.get(settings.serving_backend)
    if path is None:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Unknown serving backend {settings.serving_backend!r} "
                            f"(MLE_SERVING_BACKEND); valid: {', '.join(sorted(BACKENDS))}")
    module, _, name = path.partition(":")
    backend_class = getattr(importlib.import_module(module), name)
    backend: ReplicaBackend = backend_class(settings)
    return backend
