"""The operation runner: workers in their own sessions, results and errors, cancel that stops
everything a worker started, adoption and restart after a server restart, reconciliation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mlengine.errors import MLEngineError
from mlengine.jobs.operations import Operation, OperationRunner, WorkerFailed, cancelled_status, render_operation
from mlengine.store.database import Database, open_database
from mlengine.store.operations import OperationRepository, OperationRow

REPO = Path(__file__).resolve().parents[3]
TARGET = "projects/p/models/m/versions/v"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    database = open_database(f"sqlite:///{tmp_path / 'ops.db'}")
    yield database
    database.dispose()


def runner_for(db: Database, tmp_path: Path) -> OperationRunner:
    return OperationRunner(OperationRepository(db), tmp_path / "operations", kill_grace_seconds=0.5)


def new_op(runner: OperationRunner, kind: str = "CREATE_VERSION") -> OperationRow:
    return runner.create("p", kind, TARGET, {"modelName": "projects/p/models/m"}, prefix="create_m_v")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class Owner(Operation):
    kinds: ClassVar[tuple[str, ...]] = ("CREATE_VERSION",)
    cancellable: ClassVar[frozenset[str]] = frozenset({"CREATE_VERSION"})

    def __init__(self, runner: OperationRunner) -> None:
        self.runner = runner
        self.task: asyncio.Task[Any] | None = None
        self.recovered: list[str] = []

    async def cancel(self, op: OperationRow) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.runner.finish_async(op, error=cancelled_status("cancelled by the test"))

    async def recover(self, op: OperationRow) -> None:
        self.recovered.append(op.name)


def test_worker_result_error_and_rendering(db: Database, tmp_path: Path) -> None:
    runner = runner_for(db, tmp_path)
    op = new_op(runner)

    async def main() -> None:
        result = await runner.run_worker(op, "tests.jobs.operations.workload:echo", {"a": 1}, step="one")
        assert result["echo"] == {"a": 1} and result["pid"] != os.getpid()
        handle = runner.repo.get_by_id(op.id).handle
        assert handle["step"] == "one" and handle["attempt"] == 1 and handle["pid"] == result["pid"]
        assert Path(handle["dir"]).parent == tmp_path / "operations" / "p" / op.name
        again = await runner.run_worker(op, "tests.jobs.operations.workload:echo", {"a": 1}, step="one")
        assert again == result  # a finished step is not run twice
        with pytest.raises(WorkerFailed) as refused:
            await runner.run_worker(op, "tests.jobs.operations.workload:refuse", {}, step="two")
        assert refused.value.status == {"code": 3, "message": "Field: deploymentUri Error: nothing there"}
        with pytest.raises(WorkerFailed) as crashed:
            await runner.run_worker(op, "tests.jobs.operations.workload:crash", {}, step="three")
        assert crashed.value.status == {"code": 13, "message": "Internal error: ZeroDivisionError: boom"}

    asyncio.run(main())
    assert runner.repo.finish(op.id, response={"ok": True}) is not None
    assert runner.repo.finish(op.id, error={"code": 13, "message": "late"}) is None
    rendered = runner.get("p", op.name)
    assert rendered["done"] is True and rendered["response"] == {"ok": True}
    assert rendered["metadata"]["operationType"] == "CREATE_VERSION"
    assert rendered["metadata"]["modelName"] == "projects/p/models/m"
    assert rendered["metadata"]["@type"] == "type.googleapis.com/google.cloud.ml.v1.OperationMetadata"
    listed = runner.list_operations("p", 'metadata.operationType="CREATE_VERSION"', None, None)
    assert [o["name"] for o in listed["operations"]] == [f"projects/p/operations/{op.name}"]
    assert render_operation(runner.repo.get_by_id(op.id)) == rendered


def test_cancel_stops_the_worker_and_all_it_started(db: Database, tmp_path: Path) -> None:
    runner = runner_for(db, tmp_path)
    owner = Owner(runner)
    runner.register(owner)
    op = new_op(runner)
    marker, child_file = tmp_path / "hold", tmp_path / "child"
    marker.write_text("")

    async def main() -> None:
        owner.task = asyncio.ensure_future(runner.run_worker(
            op, "tests.jobs.operations.workload:hold", {"marker": str(marker), "childPidFile": str(child_file)}))
        deadline = time.monotonic() + 30
        while not child_file.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        worker = runner.repo.get_by_id(op.id).handle["pid"]
        child = int(child_file.read_text())
        assert alive(worker) and alive(child)
        await runner.cancel("p", op.name)
        assert owner.task.cancelled()
        assert not alive(worker) and not alive(child)

    asyncio.run(main())
    done = runner.get("p", op.name)
    assert done["error"] == {"code": 1, "message": "cancelled by the test"}
    assert done["metadata"]["isCancellationRequested"] is True
    with pytest.raises(MLEngineError, match="already done"):
        asyncio.run(runner.cancel("p", op.name))
    other = new_op(runner, "DELETE_VERSION")
    with pytest.raises(MLEngineError, match=r"\(DELETE_VERSION\) cannot be cancelled"):
        asyncio.run(runner.cancel("p", other.name))


def test_a_new_runner_adopts_a_live_worker_and_restarts_a_lost_one(db: Database, tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    marker.write_text("")
    first = runner_for(db, tmp_path)
    live, lost = new_op(first), new_op(first)
    payload = {"marker": str(marker), "childPidFile": str(tmp_path / "child")}

    async def start_and_abandon(op: OperationRow) -> int:
        task = asyncio.ensure_future(first.run_worker(op, "tests.jobs.operations.workload:hold", payload))
        deadline = time.monotonic() + 30
        while not first.repo.get_by_id(op.id).handle.get("pid") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()  # the server going away: the worker lives on
        await asyncio.gather(task, return_exceptions=True)
        return int(first.repo.get_by_id(op.id).handle["pid"])

    live_pid = asyncio.run(start_and_abandon(live))
    lost_pid = asyncio.run(start_and_abandon(lost))
    assert alive(live_pid) and alive(lost_pid)
    first.kill_workers(first.repo.get_by_id(lost.id))
    assert not alive(lost_pid)

    second = runner_for(db, tmp_path)
    marker.unlink()

    async def resume() -> tuple[Any, Any]:
        return await asyncio.gather(
            second.run_worker(live, "tests.jobs.operations.workload:hold", payload),
            second.run_worker(lost, "tests.jobs.operations.workload:hold", payload))

    adopted, restarted = asyncio.run(resume())
    assert adopted["pid"] == live_pid and second.repo.get_by_id(live.id).handle["attempt"] == 1
    assert restarted["pid"] != lost_pid and second.repo.get_by_id(lost.id).handle["attempt"] == 2


def test_reconcile_hands_pending_operations_to_their_owner(db: Database, tmp_path: Path) -> None:
    runner = runner_for(db, tmp_path)
    owner = Owner(runner)
    runner.register(owner)
    mine = new_op(runner)
    orphan = runner.create("p", "CREATE_INSTANCE", "projects/p/instances/i", {}, prefix="create_i")
    finished = runner.create("p", "UPDATE_MODEL", "projects/p/models/m", {}, prefix="update_m", done=True)
    asyncio.run(runner.reconcile())
    assert owner.recovered == [mine.name]
    assert runner.get("p", orphan.name)["error"]["code"] == 13
    assert "CREATE_INSTANCE is not run by this server" in runner.get("p", orphan.name)["error"]["message"]
    assert runner.get("p", finished.name)["done"] is True
    with pytest.raises(ValueError):
        runner.register(Owner(runner))
