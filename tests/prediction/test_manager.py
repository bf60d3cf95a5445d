"""The serving manager against a fake replica backend and a temporary SQLite store: routing
answers, traffic policies, change notifications from the model service, version creation
through a staging worker, cancel and restart recovery (no real replicas)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.prediction.fakes import FakeBackend

from mlengine.config import Settings, load_settings
from mlengine.jobs.operations import OperationRunner
from mlengine.prediction.manager import ServingManager
from mlengine.prediction.service import ModelService
from mlengine.prediction.traffic import ModelTraffic, TrafficPolicy
from mlengine.store.database import Database, open_database
from mlengine.store.operations import OperationRepository
from mlengine.store.serving import ModelRow, ServingRepository

BODY = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()


class Parts:
    def __init__(self, settings: Settings, db: Database, traffic: Callable[[ModelRow], TrafficPolicy] | None) -> None:
        self.settings = settings
        self.repo = ServingRepository(db)
        self.operations = OperationRunner(OperationRepository(db), settings.home / "operations",
                                          kill_grace_seconds=0.5)
        self.backend = FakeBackend()
        extra: dict[str, Any] = {"traffic": traffic} if traffic else {}
        self.manager = ServingManager(settings, self.repo, self.operations, backend=self.backend, **extra)
        self.service = ModelService(settings, self.repo, self.operations, events=self.manager,
                                    counts=self.manager.counts)

    async def call(self, method: str, *args: Any) -> Any:
        """A model service call from a thread, as the API makes it."""
        return await asyncio.to_thread(getattr(self.service, method), *args)

    def ready_version(self, model: str, version: str, model_dir: Path, **spec: Any) -> None:
        """A READY version straight in the store (as if created earlier)."""
        row = self.repo.get_model("p", model) if self._has(model) else self.repo.create_model(
            "p", model, description="", labels={}, spec={})
        created, _ = self.repo.create_version(row, version, spec={"name": version, "deploymentUri": str(model_dir),
                                                                  **spec}, internal={})

        def ready(v: Any) -> None:
            v.state = "READY"
            v.internal = {"root": str(model_dir.parent), "modelDir": str(model_dir), "framework": "SCIKIT_LEARN",
                          "pythonpath": [], "zygoteKind": "sklearn"}

        self.repo.update_version(created.id, ready)

    def _has(self, model: str) -> bool:
        return any(m.name == model for m in self.repo.all_models())


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Parts]]:
    databases: list[Database] = []

    def build(traffic: Callable[[ModelRow], TrafficPolicy] | None = None) -> Parts:
        settings = load_settings(home=tmp_path / "home")
        db = open_database(f"sqlite:///{tmp_path / 'store.db'}")
        databases.append(db)
        return Parts(settings, db, traffic)

    yield build
    for db in databases:
        db.dispose()


def run(parts: Parts, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await parts.manager.start()
        await parts.operations.reconcile()
        try:
            await asyncio.wait_for(scenario(), 60)
        finally:
            await parts.manager.stop()

    asyncio.run(main())


def status_of(found: Any) -> int:
    return found[0] if isinstance(found, tuple) else 200


def error_of(found: Any) -> str:
    return str(json.loads(found[1])["error"])


def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    (path / "model.joblib").write_bytes(b"not read by the fake backend")
    return path


def test_routing_answers_and_model_service_notifications(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts = make()
    parts.ready_version("m", "a", model_dir(tmp_path))
    manager = parts.manager

    async def scenario() -> None:
        assert error_of(manager.resolve("p", "nope", None)) == "Model projects/p/models/nope not found."
        pool = manager.resolve("p", "m", None)  # reconciled at start: the default version's pool
        assert status_of(pool) == 200 and (await pool.predict(BODY))[0] == 200  # type: ignore[union-attr]
        assert manager.counts("p", "m", "a") == {"ready": 1, "starting": 0}
        assert status_of(manager.resolve("p", "m", "zz")) == 404

        await parts.call("create_model", "p", {"name": "empty"})  # the service tells the manager
        assert "has no default version" in error_of(manager.resolve("p", "empty", None))
        await parts.call("delete_model", "p", "empty")
        assert error_of(manager.resolve("p", "empty", None)) == "Model projects/p/models/empty not found."

        parts.backend.gate = asyncio.Event()  # the first replica of the next version waits
        operation = await parts.call("create_version", "p", "m", {"name": "b", "deploymentUri": str(model_dir(
            tmp_path)), "machineType": "mls1-c1-m2"})
        creating = manager.resolve("p", "m", "b")
        assert status_of(creating) == 503 and "not ready yet (state CREATING)" in error_of(creating)
        parts.backend.gate.set()
        done = await wait_done(parts, operation)
        assert done["response"]["state"] == "READY" and done["response"]["machineType"] == "mls1-c1-m2"
        started = parts.backend.started[-1]
        assert started.template.cpus == 1.0 and started.template.config.cpus == 1.0
        assert started.template.runtime_kind == "sklearn"

        await parts.call("set_default", "p", "m", "b")
        assert manager.resolve("p", "m", None) is manager.resolve("p", "m", "b")
        await parts.call("patch_version", "p", "m", "b", {"manualScaling": {"nodes": 2}}, "manualScaling")
        pool_b = manager.resolve("p", "m", "b")
        assert pool_b.scaling.manual and pool_b.scaling.max_nodes == 2  # type: ignore[union-attr]

        await parts.call("set_default", "p", "m", "a")
        deleted = await parts.call("delete_version", "p", "m", "b")
        assert status_of(manager.resolve("p", "m", "b")) == 404
        assert (await wait_done(parts, deleted))["done"] is True
        assert "b" not in manager.routes[("p", "m")].versions and started.closed

    run(parts, scenario)


def test_failed_version_is_400_with_the_loader_message(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts = make()
    parts.backend.fail = "Could not load model.joblib: not a pickle"

    async def scenario() -> None:
        await parts.call("create_model", "p", {"name": "m"})
        operation = await parts.call("create_version", "p", "m", {"name": "v", "deploymentUri": str(
            model_dir(tmp_path))})
        done = await wait_done(parts, operation)
        assert done["error"] == {"code": 3, "message": "Failed to load the model: Could not load model.joblib: not "
                                                       "a pickle"}
        found = parts.manager.resolve("p", "m", None)
        assert status_of(found) == 400
        assert error_of(found) == ("Version v of model m failed to deploy: Failed to load the model: Could not load "
                                   "model.joblib: not a pickle")

    run(parts, scenario)


class Everything(TrafficPolicy):
    """Sends every model-level call to the version named ``b``."""

    name = "to-b"

    def choose(self, model: ModelTraffic) -> str | None:
        return "b" if "b" in model.versions else model.default


def test_traffic_policy_decides_model_level_calls(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts = make(traffic=lambda _model: Everything())
    parts.ready_version("m", "a", model_dir(tmp_path))
    parts.ready_version("m", "b", model_dir(tmp_path))

    async def scenario() -> None:
        assert parts.repo.get_model("p", "m").default_version == "a"
        chosen = parts.manager.resolve("p", "m", None)
        assert chosen is parts.manager.resolve("p", "m", "b")
        assert parts.manager.resolve("p", "m", "a") is not chosen  # naming a version bypasses the policy

    run(parts, scenario)


def test_cancel_during_first_replica_removes_the_version(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts = make()

    async def scenario() -> None:
        await parts.call("create_model", "p", {"name": "m"})
        parts.backend.gate = asyncio.Event()  # never set: the replica never becomes ready
        operation = await parts.call("create_version", "p", "m", {"name": "v", "deploymentUri": str(
            model_dir(tmp_path))})
        while parts.backend.attempts == 0:  # staged, now loading the first replica
            await asyncio.sleep(0.02)
        await parts.operations.cancel("p", operation["name"].rsplit("/", 1)[-1])
        done = parts.operations.get("p", operation["name"].rsplit("/", 1)[-1])
        assert done["error"] == {"code": 1, "message": "Version creation was cancelled."}
        assert parts.backend.cancelled == 1
        assert [v.name for v in parts.repo.versions_of(parts.repo.get_model("p", "m").id)] == []
        assert parts.repo.get_model("p", "m").default_version is None
        assert not list((parts.settings.models_dir / "p" / "m").glob("v-*"))
        assert status_of(parts.manager.resolve("p", "m", "v")) == 404

    run(parts, scenario)


def test_restart_recovers_pending_operations(make: Callable[..., Parts], tmp_path: Path) -> None:
    first = make()
    first.ready_version("m", "a", model_dir(tmp_path))
    ops = first.operations
    orphan = ops.create("p", "CREATE_VERSION", "projects/p/models/m/versions/gone", {}, prefix="create_m_gone")
    deleted = ops.create("p", "DELETE_VERSION", "projects/p/models/m/versions/gone", {}, prefix="delete_m_gone")
    finished = ops.create("p", "CREATE_VERSION", "projects/p/models/m/versions/a", {}, prefix="create_m_a")

    second = make()

    async def scenario() -> None:
        assert second.operations.get("p", orphan.name)["error"]["message"] == (
            "The version this operation worked on no longer exists.")
        assert "error" not in second.operations.get("p", deleted.name)  # the deletion had happened
        done = second.operations.get("p", finished.name)  # the version is READY: the creation succeeded
        assert done["response"]["state"] == "READY" and done["response"]["name"] == "projects/p/models/m/versions/a"
        assert second.backend.reconciled and second.backend.reconciled[0].key.startswith("p/m/a#")

    run(second, scenario)


async def wait_done(parts: Parts, operation: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    name = operation["name"].rsplit("/", 1)[-1]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await asyncio.to_thread(parts.operations.get, "p", name)
        if current["done"]:
            return dict(current)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"operation not done: {current}")
        await asyncio.sleep(0.05)
