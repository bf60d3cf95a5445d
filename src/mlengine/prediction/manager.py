"""The serving manager: the control plane's view of every version and its replicas.

Contract
--------
- Lives on the server's event loop (:meth:`start` in the lifespan, :meth:`stop` at shutdown).
  The metadata store is the truth; the manager keeps an in-memory route table (model →
  default version, version → state and :class:`~mlengine.prediction.pool.VersionPool`) so a
  prediction never touches the database. After every change through the API,
  :meth:`reconcile_model` re-reads that model and acts: a CREATING version gets a creation
  task (copy the files, install packages, load the model in a first replica: READY, or
  FAILED with the loader's message), a DELETING one a deletion task, a READY one a pool whose
  scaling follows its spec. At start-up every model is reconciled, so work interrupted by a
  restart resumes.
- :meth:`resolve` maps a predict URL to a pool, or to the flat-error result to send back
  (404 unknown, 503 + Retry-After while CREATING, 400 for a FAILED version).
- A background tick drives every pool's scaling and time-outs and records ``lastUseTime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError
from mlengine.prediction import deploy, specs
from mlengine.prediction.backends import ReplicaBackend, ReplicaStartError, ReplicaTemplate, create_backend
from mlengine.prediction.launcher import zygote_kind
from mlengine.prediction.pool import Result, Scaling, VersionPool, error_result
from mlengine.prediction.replica import ReplicaConfig
from mlengine.prediction.service import VERSION_TYPE, finish_operation
from mlengine.prediction.traffic import DEFAULT_POLICY, TrafficPolicy, policy_for
from mlengine.store.serving import ModelRow, OperationRow, ServingRepository, VersionRow

log = logging.getLogger("mlengine.serving")
TICK_SECONDS = 0.25
LAST_USE_FLUSH_SECONDS = 10.0


@dataclass
class VersionRoute:
    pk: int
    state: str = "CREATING"
    error: str = ""
    pool: VersionPool | None = None


@dataclass
class ModelRoute:
    default: str | None = None
    versions: dict[str, VersionRoute] = field(default_factory=dict)
    policy: TrafficPolicy = DEFAULT_POLICY


class ServingManager:
    def __init__(self, settings: Settings, repo: ServingRepository, env_cache: Any,
                 traffic: Callable[[ModelRow], TrafficPolicy] = policy_for) -> None:
        self.settings = settings
        self.traffic = traffic
        self.repo = repo
        self.env_cache = env_cache
        self.routes: dict[tuple[str, str], ModelRoute] = {}
        self.creating: dict[int, asyncio.Task[None]] = {}
        self.deleting: dict[int, asyncio.Task[None]] = {}
        self.backend: ReplicaBackend = create_backend(settings)
        self._ticker: asyncio.Task[None] | None = None
        self._flushed: dict[int, float] = {}

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        for model in await asyncio.to_thread(self.repo.all_models):
            await self.reconcile_model(model.project, model.name)
        for op in await asyncio.to_thread(self.repo.pending_operations):
            route = self.routes.get((op.project, op.model_name))
            if route is None or (op.version_name or "") not in route.versions:
                await asyncio.to_thread(finish_operation, self.repo, op, error={
                    "code": 13, "message": "The version this operation worked on no longer exists."})
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in [*self.creating.values(), *self.deleting.values()]:
            task.cancel()
        for route in self.routes.values():
            for version in route.versions.values():
                if version.pool is not None:
                    version.pool.close()
        await asyncio.sleep(0)
        await self._flush_last_use(force=True)
        await self.backend.close()

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

    async def _flush_last_use(self, force: bool = False) -> None:
        changes = {}
        now_wall, now_mono = time.time(), time.monotonic()
        for route in self.routes.values():
            for version in route.versions.values():
                pool = version.pool
                if pool is not None and pool.used and self._flushed.get(version.pk) != pool.last_request:
                    self._flushed[version.pk] = pool.last_request
                    import datetime as dt

                    wall = now_wall - (now_mono - pool.last_request)
                    changes[version.pk] = dt.datetime.fromtimestamp(wall, dt.timezone.utc)
        if changes:
            await asyncio.to_thread(self.repo.set_last_use, changes)

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
        if found.pool is not None and found.state == "READY":
            return found.pool
        if found.state == "CREATING":
            return error_result(503, f"Version {name} of model {model} is not ready yet (state CREATING); "
                                "retry in a few seconds.", retry=True)
        if found.state == "FAILED":
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
        route.policy = self.traffic(model)
        seen = set()
        for row in versions:
            seen.add(row.name)
            found = route.versions.get(row.name)
            if found is None or found.pk != row.id:
                if found is not None and found.pool is not None:
                    found.pool.close()
                found = route.versions[row.name] = VersionRoute(row.id)
            if found.state == "READY" and row.state == "CREATING":
                continue  # the creation task got there first; the row we read is older
            found.state, found.error = row.state, row.error_message
            if row.state == "CREATING" and row.id not in self.creating:
                self._spawn(self.creating, row.id, self._create(model, row))
            elif row.state == "DELETING" and row.id not in self.deleting:
                self._spawn(self.deleting, row.id, self._delete(model, row))
            elif row.state == "READY":
                if found.pool is None:
                    found.pool = self._make_pool(model, row)
                else:
                    found.pool.scaling = self._scaling(row.spec)
            elif row.state == "FAILED" and found.pool is not None:
                found.pool.close()
                found.pool = None
        for name_ in [n for n in route.versions if n not in seen]:
            gone_version = route.versions.pop(name_)
            if gone_version.pool is not None:
                gone_version.pool.close()

    def _spawn(self, registry: dict[int, asyncio.Task[None]], pk: int, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        registry[pk] = task
        task.add_done_callback(lambda _t: registry.pop(pk, None))

    def cancel_creation(self, version_pk: int) -> None:
        task = self.creating.get(version_pk)
        if task is not None:
            task.cancel()

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
        return VersionPool(label, self._scaling(row.spec), self.backend, self._template(model, row, label))

    def _template(self, model: ModelRow, row: VersionRow, label: str) -> ReplicaTemplate:
        internal, spec = row.internal, row.spec
        config = ReplicaConfig(
            model_dir=internal["modelDir"], framework=internal["framework"],
            prediction_class=spec.get("predictionClass"), framework_hint=spec.get("framework"),
            pythonpath=list(internal.get("pythonpath") or []), max_batch=self.settings.predict_max_batch,
            batch_wait_ms=self.settings.predict_batch_wait_ms,
            accept_timeout=self.settings.serving_start_timeout_seconds,
        )
        return ReplicaTemplate(
            key=f"{model.project}/{model.name}/{row.name}#{row.id}", label=label, config=config,
            root=Path(internal["root"]), runtime_kind=internal.get("zygoteKind") or "base",
            start_timeout=self.settings.serving_start_timeout_seconds,
        )

    # Creating and deleting versions ------------------------------------------------------------
    def _stage(self, model: ModelRow, row: VersionRow) -> dict[str, Any]:
        """Blocking: copy the files, resolve the framework, install packages."""
        spec = row.spec
        root = self.settings.models_dir / model.project / model.name / f"{row.name}-{row.id}"
        root.mkdir(parents=True, exist_ok=True)
        source = deploy.inspect_source(spec["deploymentUri"], self.settings.model_max_files,
                                       self.settings.model_max_bytes)
        framework = deploy.resolve_framework(source, spec.get("framework"), spec.get("predictionClass"))
        model_dir = root / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        deploy.stage(source, model_dir)
        pythonpath: list[str] = []
        if spec.get("packageUris"):
            from mlengine.storage import uris

            packages_dir = root / "packages"
            paths = [uris.fetch(uri, packages_dir) for uri in spec["packageUris"]]
            pythonpath = list(self.env_cache.prepare(paths).pythonpath)
        return {"root": str(root), "modelDir": str(model_dir), "framework": framework, "pythonpath": pythonpath,
                "zygoteKind": zygote_kind(framework, spec.get("predictionClass"), source.top_level)}

    async def _operation_for(self, model: ModelRow, row: VersionRow, kind: str) -> OperationRow | None:
        ops = await asyncio.to_thread(self.repo.pending_operations)
        return next((op for op in ops if op.project == model.project and op.model_name == model.name
                     and op.version_name == row.name and op.operation_type == kind), None)

    async def _create(self, model: ModelRow, row: VersionRow) -> None:
        op = await self._operation_for(model, row, "CREATE_VERSION")
        pool: VersionPool | None = None
        try:
            internal = await asyncio.to_thread(self._stage, model, row)
            row = await asyncio.to_thread(self.repo.update_version, row.id,
                                          lambda v: setattr(v, "internal", {**v.internal, **internal}))
            pool = self._make_pool(model, row)
            replica = await pool.start_replicas(1)[0]
            framework = getattr(replica, "info", {}).get("framework") or internal["framework"]

            def ready(v: VersionRow) -> None:
                v.state = "READY"
                v.internal = {**v.internal, "framework": framework}

            row = await asyncio.to_thread(self.repo.update_version, row.id, ready)
            route = self.routes.setdefault((model.project, model.name), ModelRoute())
            found = route.versions.setdefault(row.name, VersionRoute(row.id))
            found.state, found.error, found.pool = "READY", "", pool
            pool = None
            if op is not None:
                fresh = await asyncio.to_thread(self.repo.get_model, model.project, model.name)
                response = {"@type": VERSION_TYPE, **specs.render_version(fresh, row)}
                await asyncio.to_thread(finish_operation, self.repo, op, response=response)
        except asyncio.CancelledError:
            await self._creation_failed(model, row, op, "Version creation was cancelled.", 1)
        except MLEngineError as err:
            await self._creation_failed(model, row, op, err.message, 3)
        except ReplicaStartError as err:
            await self._creation_failed(model, row, op, f"Failed to load the model: {err}", 3)
        except Exception as err:
            log.exception("creating %s failed", row.name)
            await self._creation_failed(model, row, op, f"Internal error: {type(err).__name__}: {err}", 13)
        finally:
            if pool is not None:
                pool.close()

    async def _creation_failed(self, model: ModelRow, row: VersionRow, op: OperationRow | None, message: str,
                               code: int) -> None:
        def failed(v: VersionRow) -> None:
            if v.state == "CREATING":
                v.state = "FAILED"
                v.error_message = message

        with contextlib.suppress(MLEngineError):
            updated = await asyncio.to_thread(self.repo.update_version, row.id, failed)
            found = self.routes.get((model.project, model.name), ModelRoute()).versions.get(row.name)
            if found is not None and updated.state == "FAILED":
                found.state, found.error = "FAILED", message
        if op is not None:
            await asyncio.to_thread(finish_operation, self.repo, op, error={"code": code, "message": message})

    async def _delete(self, model: ModelRow, row: VersionRow) -> None:
        op = await self._operation_for(model, row, "DELETE_VERSION")
        creation = self.creating.get(row.id)
        if creation is not None:
            creation.cancel()
            with contextlib.suppress(BaseException):
                await creation
        route = self.routes.get((model.project, model.name))
        found = route.versions.get(row.name) if route else None
        if found is not None and found.pool is not None:
            found.pool.close()
            found.pool = None
        root = (row.internal or {}).get("root")
        if root:
            await asyncio.to_thread(shutil.rmtree, root, True)
        await asyncio.to_thread(self.repo.delete_version_row, row.id)

        def clear_default(m: ModelRow) -> None:
            if m.default_version == row.name:
                m.default_version = None

        with contextlib.suppress(MLEngineError):
            await asyncio.to_thread(self.repo.update_model, model.id, clear_default)
        if op is not None:
            await asyncio.to_thread(finish_operation, self.repo, op, response=None)
        await self.reconcile_model(model.project, model.name)
