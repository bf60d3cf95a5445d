"""The local replica backend passes the replica backend conformance suite."""

from __future__ import annotations

from pathlib import Path

from mlengine.config import load_settings
from mlengine.prediction.backends import ReplicaBackend, create_backend
from mlengine.prediction.backends.local import LocalBackend
from mlengine.testing.replica_backends import ReplicaBackendSuite


class TestLocalBackend(ReplicaBackendSuite):
    def make_backend(self, home: Path) -> ReplicaBackend:
        backend = create_backend(load_settings(home=home))
        assert isinstance(backend, LocalBackend)
        return backend


class TestLocalBackendWithoutZygotes(ReplicaBackendSuite):
    def make_backend(self, home: Path) -> ReplicaBackend:
        return LocalBackend(load_settings(home=home, serving_zygotes="off"))
