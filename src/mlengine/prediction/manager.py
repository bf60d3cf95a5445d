"""The serving manager: the control plane's view of every version and its replicas.

Contract
--------
- Lives on the server's event loop (:meth:`ServingManager.start` in the lifespan,
  :meth:`ServingManager.stop` at shutdown). The metadata store is the truth; the manager keeps
  an in-memory route table (model → traffic policy and default version, version → state and
  :class:`~mlengine.prediction.pool.VersionPool`) so a prediction never touches the database.
- It is the model service's :class:`~mlengine.prediction.events.ServingEvents`: after every
  change the service stored, :meth:`reconcile_model` re-reads that model and acts. A CREATING
  version gets a creation task: staging (copy the files, install the packages) runs in a
  worker process of its ``CREATE_VERSION`` operation
  (:meth:`~mlengine.jobs.operations.OperationRunner.run_worker`), then the model is loaded in
  a first replica: READY, or FAILED with the loader's message. A DELETING version gets a
  deletion task, a READY one a pool whose scaling follows its spec. At start-up every model is
  reconciled, so work interrupted by a restart resumes (a staging worker still running is
  adopted).
- It owns the ``CREATE_VERSION`` and ``DELETE_VERSION`` operation kinds
  (:class:`VersionOperations`): cancelling a creation stops the task and its worker, removes
  the half-created version (row, files, default) and ends the operation CANCELLED.
- :meth:`resolve` maps a predict URL to a pool, or to the flat-error result to send back
  (404 unknown, 503 + Retry-After while CREATING, 400 for a FAILED version); a call on the
  model's name asks the model's :class:`~mlengine.prediction.traffic.TrafficPolicy`.
- Replicas run where the :class:`~mlengine.prediction.backends.ReplicaBackend` puts them.
- A background tick drives every pool's scaling and time-outs and records ``lastUseTime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError
from mlengine.jobs.lifecycle import VersionState
from mlengine.jobs.operations import Operation, OperationRunner, WorkerFailed, cancelled_status
from mlengine.jobs.sandboxing import build_confinement
from mlengine.prediction import specs, staging
from mlengine.prediction.backends import ReplicaBackend, ReplicaStartError, ReplicaTemplate, create_backend
from mlengine.prediction.events import ServingEvents
from mlengine.prediction.policies import policy_for
from mlengine.prediction.pool import Result, Scaling, VersionPool, error_result
from mlengine.prediction.replica import ReplicaConfig
from mlengine.prediction.service import VERSION_TYPE
from mlengine.prediction.traffic import DEFAULT_POLICY, TrafficPolicy
from mlengine.storage.policy import uri_policy
from mlengine.store.operations import OperationRow
from mlengine.store.serving import ModelRow, ServingRepository, VersionRow

log = logging.getLogger("mlengine.serving")
TICK_SECONDS = 0.25
LAST_USE_FLUSH_SECONDS = 10.0
NOTIFY_TIMEOUT_SECONDS = 60.0
CREATE_VERSION = "CREATE_VERSION"
DELETE_VERSION = "DELETE_VERSION"
_WRITES: set[asyncio.Task[None]] = set()  # traffic changes being stored (kept referenced)
CREATING, READY, DELETING, FAILED = (VersionState.CREATING.value, VersionState.READY.value,
                                     VersionState.DELETING.value, VersionState.FAILED.value)


@dataclass
class VersionRoute:
    pk: int
    state: str = CREATING
    error: str = ""
    pool: VersionPool | None = None


@dataclass
class ModelRoute:
    default: str | None = None
    versions: dict[str, VersionRoute] = field(default_factory=dict)
    policy: TrafficPolicy = DEFAULT_POLICY


def parse_target(target: str) -> tuple[str, str, str | None]:
    """``(project, model, version or None)`` of ``projects/p/models/m[/versions/v]``."""
    parts = target.split("/")
    if len(parts) not in (4, 6) or parts[0] != "projects" or parts[2] != "models" or (
            len(parts) == 6 and parts[4] != "versions"):
        raise ValueError(f"not a model or version name: {target!r}")
    return parts[1], parts[3], parts[5] if len(parts) == 6 else None


class ServingManager(ServingEvents):
    def __init__(self, settings: Settings, repo: ServingRepository, operations: OperationRunner, *,
                 backend: ReplicaBackend | None = None,
                 traffic: Callable[[ModelRow], TrafficPolicy] = policy_for) -> None:
        self.settings = settings
        self.repo = repo
        self.operations = operations
        self.backend: ReplicaBackend = backend or create_backend(settings)
        self.traffic = traffic
        self.routes: dict[tuple[str, str], ModelRoute] = {}
        self.creating: dict[int, asyncio.Task[None]] = {}
        self.deleting: dict[int, asyncio.Task[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._flushed: dict[int, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._discarding: set[int] = set()
        #: Called with every new pool (monitoring installs its request logger).
        self.pool_hooks: list[Callable[[ModelRow, VersionRow, VersionPool], None]] = []
        operations.register(VersionOperations(self))

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Reconcile every model (resuming interrupted work), then start the tick."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        models = await asyncio.to_thread(self.repo.all_models)
        for model in models:
            await self.reconcile_model(model.project, model.name)
        templates = [v.pool.template for r in self.routes.values() for v in r.versions.values() if v.pool]
        await self.backend.reconcile(templates)
        self._ticker = self._loop.create_task(self._tick_loop())

    async def stop(self) -> None:
        """Stop the tick, the creation and deletion tasks (their workers live on, for the next
        server to adopt) and every replica."""
        if self._ticker is not None:
            self._ticker.cancel()
        tasks = [*self.creating.values(), *self.deleting.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for route in self.routes.values():
            for version in route.versions.values():
                if version.pool is not None:
                    version.pool.close()
        await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            await self._flush_last_use()
        await self.backend.close()
        self._loop = None

    async def _tick_loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for pool in self.pools():
                try:
                    pool.tick()
                except Exception:  # one pool's trouble must not stop the others
                    log.exception("scaling %s failed", pool.label)
            if time.monotonic() - last_flush > LAST_USE_FLUSH_SECONDS:
                last_flush = time.monotonic()
                with contextlib.suppress(Exception):
                    await self._flush_last_use()

    def pools(self) -> list[VersionPool]:
        return [v.pool for r in self.routes.values() for v in r.versions.values() if v.pool is not None]

    async def _flush_last_use(self) -> None:
        changes = {}
        now_wall, now_mono = time.time(), time.monotonic()
        for route in self.routes.values():
            for version in route.versions.values():
                pool = version.pool
                if pool is not None and pool.used and self._flushed.get(version.pk) != pool.last_request:
                    self._flushed[version.pk] = pool.last_request
                    wall = now_wall - (now_mono - pool.last_request)
                    changes[version.pk] = dt.datetime.fromtimestamp(wall, dt.timezone.utc)
        if changes:
            await asyncio.to_thread(self.repo.set_last_use, changes)

    # ServingEvents (any thread) ----------------------------------------------------------------
    def model_changed(self, project: str, model: str) -> None:
        self._notify(self.reconcile_model(project, model))

    def version_changed(self, project: str, model: str, version: str) -> None:
        self._notify(self.reconcile_model(project, model))

    def _notify(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the manager's loop; from another thread, wait until it is done."""
        loop = self._loop
        if loop is None or loop.is_closed():
            work.close()
            return
        if threading.get_ident() == self._loop_thread:
            loop.create_task(work)
            return
        try:
            asyncio.run_coroutine_threadsafe(work, loop).result(NOTIFY_TIMEOUT_SECONDS)
        except Exception:  # the store is the truth: the next reconcile catches up
            log.exception("applying a change to the route table failed")

    # Routing (hot path) ----------------------------------------------------------------------
    def resolve(self, project: str, model: str, version: str | None) -> VersionPool | Result:
        route = self.routes.get((project, model))
        if route is None:
            return error_result(404, f"Model projects/{project}/models/{model} not found.")
        name = version or route.policy.choose(route)
        if name is None:
            return error_result(404, f"Model {model} has no default version: create a version first, or name "
                                "one in the URL (.../versions/VERSION:predict).")
        found = route.versions.get(name)
        if found is None:
            return error_result(404, f"Version projects/{project}/models/{model}/versions/{name} not found.")
        if found.pool is not None and found.state == READY:
            return found.pool
        if found.state == CREATING:
            return error_result(503, f"Version {name} of model {model} is not ready yet (state CREATING); "
                                "retry in a few seconds.", retry=True)
        if found.state == FAILED:
            return error_result(400, f"Version {name} of model {model} failed to deploy: {found.error}")
        return error_result(404, f"Version {name} of model {model} is being deleted.")

    def counts(self, project: str, model: str, version: str) -> dict[str, int] | None:
        route = self.routes.get((project, model))
        found = route.versions.get(version) if route else None
        return found.pool.counts() if found is not None and found.pool is not None else None

    # Reconciliation --------------------------------------------------------------------------
    async def reconcile_model(self, project: str, name: str) -> None:
        key = (project, name)
        try:
            model = await asyncio.to_thread(self.repo.get_model, project, name)
            versions = await asyncio.to_thread(self.repo.versions_of, model.id)
        except MLEngineError as err:
            if err.code is not Code.NOT_FOUND:
                raise
            gone = self.routes.pop(key, None)
            for version in (gone.versions.values() if gone else ()):
                if version.pool is not None:
                    version.pool.close()
            return
        route = self.routes.setdefault(key, ModelRoute())
        route.default = model.default_version
        policy = self.traffic(model)
        policy.adopt(route.policy, partial(self._write_traffic, model.id, project, name))
        route.policy = policy
        seen = set()
        for row in versions:
            seen.add(row.name)
            found = route.versions.get(row.name)
            if found is None or found.pk != row.id:
                if found is not None and found.pool is not None:
                    found.pool.close()
                found = route.versions[row.name] = VersionRoute(row.id)
            if found.state == READY and row.state == CREATING:
                continue  # the creation task got there first; the row we read is older
            found.state, found.error = row.state, row.error_message
            if row.state == CREATING and row.id not in self.creating and row.id not in self._discarding:
                self._spawn(self.creating, row.id, self._create(model, row))
            elif row.state == DELETING and row.id not in self.deleting:
                self._spawn(self.deleting, row.id, self._delete(model, row))
            elif row.state == READY:
                if found.pool is None:
                    found.pool = self._make_pool(model, row)
                else:
                    found.pool.scaling = self._scaling(row.spec)
            elif row.state == FAILED and found.pool is not None:
                found.pool.close()
                found.pool = None
        for name_ in [n for n in route.versions if n not in seen]:
            gone_version = route.versions.pop(name_)
            if gone_version.pool is not None:
                gone_version.pool.close()

    def _write_traffic(self, pk: int, project: str, name: str,
                       change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """A traffic policy's own change of the model (a canary's rollback or promotion step):
        stored, then applied like any other change."""
        async def write() -> None:
            def apply(model: ModelRow) -> None:
                model.spec = change(dict(model.spec or {}))

            try:
                await asyncio.to_thread(self.repo.update_model, pk, apply)
            except MLEngineError:
                log.exception("recording the traffic change of model %s failed", name)
            await self.reconcile_model(project, name)

        task = asyncio.get_running_loop().create_task(write())
        _WRITES.add(task)
        task.add_done_callback(_WRITES.discard)

    def traffic_status(self, project: str, model: str) -> dict[str, Any] | None:
        """What the model's traffic policy measured (shadow comparisons, canary windows)."""
        route = self.routes.get((project, model))
        return route.policy.status() if route is not None else None

    def _spawn(self, registry: dict[int, asyncio.Task[None]], pk: int, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        registry[pk] = task
        task.add_done_callback(lambda _t: registry.pop(pk, None) if registry.get(pk) is _t else None)

    # Pools -----------------------------------------------------------------------------------
    def _scaling(self, spec: dict[str, Any]) -> Scaling:
        s = self.settings
        default_max = s.serving_max_nodes or (os.cpu_count() or 1)
        common: dict[str, Any] = {"idle_seconds": s.serving_idle_seconds, "target_inflight": s.serving_target_inflight,
                  "queue_limit": s.predict_queue_limit, "timeout": s.predict_timeout_seconds,
                  "start_timeout": s.serving_start_timeout_seconds}
        manual = spec.get("manualScaling")
        if manual:
            nodes = int(manual.get("nodes", 1))
            return Scaling(min_nodes=nodes, max_nodes=nodes, manual=True, **common)
        auto = spec.get("autoScaling") or {}
        minimum = int(auto.get("minNodes", 0))
        maximum = int(auto.get("maxNodes") or max(default_max, minimum, 1))
        return Scaling(min_nodes=minimum, max_nodes=maximum, **common)

    def _make_pool(self, model: ModelRow, row: VersionRow) -> VersionPool:
        label = f"version {row.name} of model {model.name}"
        pool = VersionPool(label, self._scaling(row.spec), self.backend, self._template(model, row, label))
        for hook in self.pool_hooks:
            hook(model, row, pool)
        return pool

    def _template(self, model: ModelRow, row: VersionRow, label: str) -> ReplicaTemplate:
        internal, spec = row.internal, row.spec
        cpus = specs.machine_cpus(spec.get("machineType"))
        config = ReplicaConfig(
            model_dir=internal["modelDir"], framework=internal["framework"],
            prediction_class=spec.get("predictionClass"), framework_hint=spec.get("framework"),
            pythonpath=list(internal.get("pythonpath") or []), max_batch=self.settings.predict_max_batch,
            batch_wait_ms=self.settings.predict_batch_wait_ms,
            accept_timeout=self.settings.serving_start_timeout_seconds, cpus=cpus,
            allow_pickle=self.settings.model_allow_pickle, max_instances=self.settings.predict_max_instances,
        )
        return ReplicaTemplate(
            key=f"{model.project}/{model.name}/{row.name}#{row.id}", label=label, config=config,
            root=Path(internal["root"]), runtime_kind=internal.get("zygoteKind") or "base", cpus=cpus,
            start_timeout=self.settings.serving_start_timeout_seconds,
        )

    # Creating and deleting versions ------------------------------------------------------------
    def version_root(self, model: ModelRow, row: VersionRow) -> Path:
        """The version's managed directory (model copy, packages, replica logs)."""
        return self.settings.models_dir / model.project / model.name / f"{row.name}-{row.id}"

    async def _operation_for(self, model: ModelRow, row: VersionRow, kind: str) -> OperationRow | None:
        target = f"{specs.model_name(model.project, model.name)}/versions/{row.name}"
        ops = await asyncio.to_thread(self.operations.repo.pending, kind, target)
        return ops[-1] if ops else None

    async def _stage(self, model: ModelRow, row: VersionRow, op: OperationRow | None) -> dict[str, Any]:
        payload = staging.stage_payload(self.version_root(model, row), row.spec,
                                        max_files=self.settings.model_max_files,
                                        max_bytes=self.settings.model_max_bytes, envs_dir=self.settings.envs_dir,
                                        uri_policy=uri_policy(self.settings),
                                        allow_pickle=self.settings.model_allow_pickle,
                                        confinement=build_confinement(self.settings),
                                        requirements=specs.version_runtime(row.spec, self.settings).requirements)
        if op is None:  # a version without its operation (created by an older server): stage here
            return await asyncio.to_thread(staging.stage_version, payload)
        result: dict[str, Any] = await self.operations.run_worker(op, staging.STAGE_FUNCTION, payload, step="stage")
        return result

    async def _create(self, model: ModelRow, row: VersionRow) -> None:
        op = await self._operation_for(model, row, CREATE_VERSION)
        pool: VersionPool | None = None
        try:
            internal = await self._stage(model, row, op)
            row = await asyncio.to_thread(self.repo.update_version, row.id,
                                          lambda v: setattr(v, "internal", {**v.internal, **internal}))
            pool = self._make_pool(model, row)
            replica = await pool.start_replicas(1)[0]
            framework = replica.info.get("framework") or internal["framework"]

            def ready(v: VersionRow) -> None:
                v.state = READY
                v.internal = {**v.internal, "framework": framework, "features": replica.info.get("features")}

            row = await asyncio.to_thread(self.repo.update_version, row.id, ready)
            route = self.routes.setdefault((model.project, model.name), ModelRoute())
            found = route.versions.setdefault(row.name, VersionRoute(row.id))
            found.state, found.error, found.pool = READY, "", pool
            pool = None
            if op is not None:
                fresh = await asyncio.to_thread(self.repo.get_model, model.project, model.name)
                response = {"@type": VERSION_TYPE, **specs.render_version(fresh, row)}
                await self.operations.finish_async(op, response=response)
        except asyncio.CancelledError:
            raise  # a server shutdown (the next one resumes) or a cancel (VersionOperations cleans up)
        except WorkerFailed as err:
            await self._creation_failed(model, row, op, str(err.status.get("message")),
                                        int(err.status.get("code") or Code.INTERNAL.rpc_code))
        except MLEngineError as err:
            await self._creation_failed(model, row, op, err.message, err.code.rpc_code)
        except ReplicaStartError as err:
            await self._creation_failed(model, row, op, f"Failed to load the model: {err}",
                                        Code.INVALID_ARGUMENT.rpc_code)
        except Exception as err:
            log.exception("creating %s failed", row.name)
            await self._creation_failed(model, row, op, f"Internal error: {type(err).__name__}: {err}",
                                        Code.INTERNAL.rpc_code)
        finally:
            if pool is not None:
                pool.close()

    async def _creation_failed(self, model: ModelRow, row: VersionRow, op: OperationRow | None, message: str,
                               code: int) -> None:
        def failed(v: VersionRow) -> None:
            if v.state == CREATING:
                v.state = FAILED
                v.error_message = message

        with contextlib.suppress(MLEngineError):
            updated = await asyncio.to_thread(self.repo.update_version, row.id, failed)
            found = self.routes.get((model.project, model.name), ModelRoute()).versions.get(row.name)
            if found is not None and updated.state == FAILED:
                found.state, found.error = FAILED, message
        if op is not None:
            await self.operations.finish_async(op, error={"code": code, "message": message})

    async def _stop_creation(self, pk: int) -> None:
        task = self.creating.get(pk)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _discard(self, model: ModelRow, row: VersionRow) -> None:
        """Remove a version for good: its pool, its files, its row, its default."""
        route = self.routes.get((model.project, model.name))
        found = route.versions.get(row.name) if route else None
        if found is not None and found.pool is not None:
            found.pool.close()
            found.pool = None
        for root in {str(self.version_root(model, row)), (row.internal or {}).get("root")}:
            if root:
                await asyncio.to_thread(shutil.rmtree, root, True)
        await asyncio.to_thread(self.repo.delete_version_row, row.id)

        def clear_default(m: ModelRow) -> None:
            if m.default_version == row.name:
                m.default_version = None

        with contextlib.suppress(MLEngineError):
            await asyncio.to_thread(self.repo.update_model, model.id, clear_default)

    async def _delete(self, model: ModelRow, row: VersionRow) -> None:
        op = await self._operation_for(model, row, DELETE_VERSION)
        await self._stop_creation(row.id)
        creation = await self._operation_for(model, row, CREATE_VERSION)
        if creation is not None:
            await asyncio.to_thread(self.operations.kill_workers, creation)
            await self.operations.finish_async(creation, error=cancelled_status(
                "The version was deleted before its creation finished."))
        await self._discard(model, row)
        if op is not None:
            await self.operations.finish_async(op, response=None)
        await self.reconcile_model(model.project, model.name)

    # Operations (VersionOperations) ----------------------------------------------------------
    async def _version_of(self, op: OperationRow) -> tuple[ModelRow, VersionRow] | None:
        try:
            project, model_name, version = parse_target(op.target)
        except ValueError:
            return None
        if version is None:
            return None
        try:
            model = await asyncio.to_thread(self.repo.get_model, project, model_name)
            return model, await asyncio.to_thread(self.repo.get_version, model, version)
        except MLEngineError as err:
            if err.code is Code.NOT_FOUND:
                return None
            raise

    async def cancel_creation(self, op: OperationRow) -> None:
        """Stop a version creation and remove the half-created version; the op ends CANCELLED."""
        found = await self._version_of(op)
        if found is not None:
            model, row = found
            self._discarding.add(row.id)
            try:
                await self._stop_creation(row.id)
                current = await asyncio.to_thread(self.operations.repo.get_by_id, op.id)
                if current.done:  # it finished before the cancel landed
                    return
                await self._discard(model, row)
            finally:
                self._discarding.discard(row.id)
        await self.operations.finish_async(op, error=cancelled_status("Version creation was cancelled."))
        if found is not None:
            await self.reconcile_model(found[0].project, found[0].name)

    async def recover(self, op: OperationRow) -> None:
        """At start-up (models already reconciled): leave an operation to the task carrying it,
        or end it from the version's state."""
        found = await self._version_of(op)
        if found is None and op.kind == DELETE_VERSION:  # the server stopped right after deleting it
            await self.operations.finish_async(op, response=None)
            return
        if found is None:
            await self.operations.finish_async(op, error={"code": Code.INTERNAL.rpc_code, "message": (
                "The version this operation worked on no longer exists.")})
            return
        model, row = found
        if row.id in self.creating or row.id in self.deleting:
            return
        if op.kind == CREATE_VERSION and row.state == READY:
            response = {"@type": VERSION_TYPE, **specs.render_version(model, row)}
            await self.operations.finish_async(op, response=response)
        elif op.kind == CREATE_VERSION and row.state == FAILED:
            await self.operations.finish_async(op, error={"code": Code.INVALID_ARGUMENT.rpc_code,
                                                          "message": row.error_message})
        else:
            await self.operations.finish_async(op, error={"code": Code.INTERNAL.rpc_code, "message": (
                f"The version is {row.state} and nothing works on this operation any more.")})


class VersionOperations(Operation):
    """``CREATE_VERSION`` (cancellable) and ``DELETE_VERSION``, carried out by the manager."""

    kinds: ClassVar[tuple[str, ...]] = (CREATE_VERSION, DELETE_VERSION)
    cancellable: ClassVar[frozenset[str]] = frozenset({CREATE_VERSION})

    def __init__(self, manager: ServingManager) -> None:
        self.manager = manager

    async def cancel(self, op: OperationRow) -> None:
        await self.manager.cancel_creation(op)

    async def recover(self, op: OperationRow) -> None:
        await self.manager.recover(op)
