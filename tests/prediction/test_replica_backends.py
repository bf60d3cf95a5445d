"""The local replica backend passes the replica backend conformance suite."""

from __future__ import annotations

from pathlib import Path

from mlengine.config import load_settings
from mlengine.prediction.backends import ReplicaBackend, create_backend
from mlengine.prediction.backends.local import LocalBackend
from mlengine.testing.replica_backends import ReplicaBackendSuite


def local_leftovers(backend: ReplicaBackend) -> list[str]:
    """Live zygotes and replicas of a local backend: processes naming its socket directory."""
    assert isinstance(backend, LocalBackend)
    marker = str(backend.launcher.sock_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in ("Z", "X"):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


class TestLocalBackend(ReplicaBackendSuite):
    def make_backend(self, home: Path) -> ReplicaBackend:
        backend = create_backend(load_settings(home=home))
        assert isinstance(backend, LocalBackend)
        return backend

    def leftovers(self, backend: ReplicaBackend) -> list[str]:
        return local_leftovers(backend)


class TestLocalBackendWithoutZygotes(ReplicaBackendSuite):
    def make_backend(self, home: Path) -> ReplicaBackend:
        return LocalBackend(load_settings(home=home, serving_zygotes="off"))

    def leftovers(self, backend: ReplicaBackend) -> list[str]:
        return local_leftovers(backend)
