"""The operation runner: creates, lists, runs (in killable workers), cancels and reconciles
long-running operations of every kind. The contract is in :mod:`mlengine.jobs.operations._base`.

Workers live under ``root/<project>/<operation>/<step>-<attempt>/``: ``spec.json`` (what to
run), ``pid`` (written by the worker first), ``result.json`` (written last) and ``worker.log``
(its output).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlengine.core.processes import kill_session, proc_start_ticks
from mlengine.errors import Code, MLEngineError, failed_precondition
from mlengine.jobs.operations._base import Operation, render_operation
from mlengine.store.filters import compile_filter
from mlengine.store.operations import OperationRepository, OperationRow

log = logging.getLogger("mlengine.operations")
WORKER_MODULE = "mlengine.jobs.operations.worker"


class WorkerFailed(Exception):
    """A worker ended with an error; ``status`` is its ``google.rpc.Status``."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(str(status.get("message") or "The operation's worker failed."))
        self.status = status


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _alive(pid: int | None, start_ticks: int | None) -> bool:
    if not pid:
        return False
    info = proc_start_ticks(pid)
    if info is None or info[1] in ("Z", "X"):
        return False
    return start_ticks is None or info[0] == start_ticks


class OperationRunner:
    """See :mod:`mlengine.jobs.operations._base` for the contract."""

    def __init__(self, repo: OperationRepository, root: Path, poll_seconds: float = 0.05,
                 kill_grace_seconds: float = 2.0) -> None:
        self.repo = repo
        self.root = Path(root)
        self.poll_seconds = poll_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self._owners: dict[str, Operation] = {}
        self._cancelling: set[int] = set()
        self._unreaped: list[subprocess.Popen[bytes]] = []

    def register(self, owner: Operation) -> None:
        """Make ``owner`` responsible for its :attr:`~Operation.kinds`."""
        for kind in owner.kinds:
            if kind in self._owners and self._owners[kind] is not owner:
                raise ValueError(f"operation kind {kind} is already registered")
            self._owners[kind] = owner

    # Store (blocking, thread-safe) ---------------------------------------------------------
    def create(self, project: str, kind: str, target: str, meta: dict[str, Any], *, prefix: str,
               done: bool = False, response: dict[str, Any] | None = None) -> OperationRow:
        """A new operation named ``<prefix>-<milliseconds>`` (unique in ``project``)."""
        stamp = int(time.time() * 1000)
        for attempt in range(100):
            try:
                return self.repo.create(project, f"{prefix}-{stamp + attempt}", kind, target, meta, done=done,
                                        response=response)
            except MLEngineError as err:  # a name taken within the same millisecond
                if err.code is not Code.ALREADY_EXISTS:
                    raise
        raise failed_precondition("Too many operations at once; retry")

    def get(self, project: str, name: str) -> dict[str, Any]:
        return render_operation(self.repo.get(project, name))

    def list_operations(self, project: str, filter_text: str | None, page_size: int | None,
                        page_token: str | None) -> dict[str, Any]:
        predicate = compile_filter(filter_text)
        rows, token = self.repo.list(project, lambda r: predicate(render_operation(r)), page_size, page_token)
        result: dict[str, Any] = {"operations": [render_operation(r) for r in rows]}
        if token:
            result["nextPageToken"] = token
        return result

    # Event loop ----------------------------------------------------------------------------
    async def finish_async(self, op: OperationRow, *, response: dict[str, Any] | None = None,
                           error: dict[str, Any] | None = None) -> OperationRow | None:
        """End ``op`` unless it already ended (then None)."""
        return await asyncio.to_thread(self.repo.finish, op.id, response=response, error=error)

    async def cancel(self, project: str, name: str) -> None:
        """``projects.operations.cancel`` (see the module contract)."""
        row = await asyncio.to_thread(self.repo.get, project, name)
        if row.done:
            raise failed_precondition(f"Operation {name} is already done")
        owner = self._owners.get(row.kind)
        if owner is None or row.kind not in owner.cancellable:
            raise failed_precondition(f"Operation {name} ({row.kind}) cannot be cancelled")

        def requested(op: OperationRow) -> None:
            op.cancel_requested = True

        row = await asyncio.to_thread(self.repo.update, row.id, requested)
        self._cancelling.add(row.id)
        try:
            killed = await asyncio.to_thread(self.kill_workers, row)
            if killed:
                log.info("operation %s cancelled: killed worker processes %s", name, killed)
            await owner.cancel(row)
            for _ in range(40):
                if not self._reap():
                    break
                await asyncio.sleep(0.05)
        finally:
            self._cancelling.discard(row.id)

    async def reconcile(self) -> None:
        """At start-up: hand every pending operation to its kind (see the module contract)."""
        for op in await asyncio.to_thread(self.repo.pending):
            owner = self._owners.get(op.kind)
            try:
                if owner is None:
                    await self.finish_async(op, error={"code": Code.INTERNAL.rpc_code, "message": (
                        f"Operation kind {op.kind} is not run by this server; the operation cannot finish.")})
                else:
                    await owner.recover(op)
            except Exception:
                log.exception("recovering operation %s failed", op.name)

    # Workers -------------------------------------------------------------------------------
    def op_dir(self, op: OperationRow) -> Path:
        return self.root / op.project / op.name

    async def run_worker(self, op: OperationRow, function: str, payload: dict[str, Any], *,
                         step: str = "work") -> Any:
        """Run ``function(payload)`` (``package.module:name``, importable by a fresh interpreter)
        in a worker process for ``op`` and return its result; :class:`WorkerFailed` with the
        worker's error status otherwise. A worker of this step recorded on ``op`` is adopted
        while alive, its result taken if it finished, or the step started again if it vanished.
        Cancelling the caller leaves the worker running (a restarted server adopts it)."""
        self._reap()
        fresh = await asyncio.to_thread(self.repo.get_by_id, op.id)
        handle = dict(fresh.handle or {})
        attempt = 1
        if handle.get("step") == step and handle.get("dir"):
            directory = Path(handle["dir"])
            if (directory / "result.json").exists():
                return self._outcome(op, handle, None)
            pid, ticks = self._pid_of(handle)
            if _alive(pid, ticks):
                log.info("operation %s: adopting its %s worker (pid %s)", op.name, step, pid)
                handle.update(pid=pid, startTicks=ticks)
                return await self._wait(op, handle, None)
            log.warning("operation %s: its %s worker is gone without a result; starting it again", op.name, step)
            attempt = int(handle.get("attempt") or 1) + 1
        await asyncio.to_thread(self.kill_workers, fresh)  # an orphan of an attempt never recorded
        directory = self.op_dir(op) / f"{step}-{attempt}"
        directory.mkdir(parents=True, exist_ok=True)
        handle = {"step": step, "attempt": attempt, "dir": str(directory), "pid": None, "startTicks": None}
        await self._set_handle(op, handle)
        spec = {"function": function, "payload": payload, "result": str(directory / "result.json"),
                "pidFile": str(directory / "pid")}
        (directory / "spec.json").write_text(json.dumps(spec))
        with open(directory / "worker.log", "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, str(directory / "spec.json")], cwd=directory,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True,
            )
        ticks_now = proc_start_ticks(popen.pid)
        handle.update(pid=popen.pid, startTicks=ticks_now[0] if ticks_now else None)
        await self._set_handle(op, handle)
        return await self._wait(op, handle, popen)

    async def _set_handle(self, op: OperationRow, handle: dict[str, Any]) -> None:
        def change(row: OperationRow) -> None:
            row.handle = dict(handle)

        await asyncio.to_thread(self.repo.update, op.id, change)

    @staticmethod
    def _pid_of(handle: dict[str, Any]) -> tuple[int | None, int | None]:
        if handle.get("pid"):
            return int(handle["pid"]), handle.get("startTicks")
        recorded = _read_json(Path(handle["dir"]) / "pid") if handle.get("dir") else None
        if recorded and recorded.get("pid"):
            return int(recorded["pid"]), recorded.get("startTicks")
        return None, None

    async def _wait(self, op: OperationRow, handle: dict[str, Any], popen: subprocess.Popen[bytes] | None) -> Any:
        pid, ticks = handle.get("pid"), handle.get("startTicks")
        try:
            while popen.poll() is None if popen is not None else _alive(pid, ticks):
                await asyncio.sleep(self.poll_seconds)
        except asyncio.CancelledError:
            if popen is not None:  # the worker lives on; reaped later (see _reap)
                self._unreaped.append(popen)
            raise
        if op.id in self._cancelling:
            raise asyncio.CancelledError()
        return self._outcome(op, handle, popen)

    def _outcome(self, op: OperationRow, handle: dict[str, Any], popen: subprocess.Popen[bytes] | None) -> Any:
        directory = Path(handle["dir"])
        result = _read_json(directory / "result.json")
        if result is not None and "response" in result:
            return result["response"]
        if result is not None and isinstance(result.get("error"), dict):
            raise WorkerFailed(result["error"])
        how = "exited"
        if popen is not None and popen.returncode is not None:
            how = f"killed by signal {-popen.returncode}" if popen.returncode < 0 else f"exit code {popen.returncode}"
        raise WorkerFailed({"code": Code.INTERNAL.rpc_code, "message": (
            f"The worker of operation {op.name} ended without a result ({how}); its log is "
            f"{directory / 'worker.log'}")})

    def _reap(self) -> int:
        """Collect the exit status of workers whose caller stopped waiting; how many still run."""
        self._unreaped = [p for p in self._unreaped if p.poll() is None]
        return len(self._unreaped)

    def kill_workers(self, op: OperationRow) -> list[int]:
        """Stop (:func:`kill_session`) every worker ``op`` ever started, with everything they
        started; blocking; returns the pids signalled."""
        candidates: dict[int, int | None] = {}
        handle = op.handle or {}
        if handle.get("pid"):
            candidates[int(handle["pid"])] = handle.get("startTicks")
        directory = self.op_dir(op)
        if directory.is_dir():
            for attempt in directory.iterdir():
                recorded = _read_json(attempt / "pid")
                if recorded and recorded.get("pid"):
                    candidates.setdefault(int(recorded["pid"]), recorded.get("startTicks"))
        killed: list[int] = []
        for pid, ticks in candidates.items():
            killed += kill_session(pid, ticks, self.kill_grace_seconds)
        return killed
