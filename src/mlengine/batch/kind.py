"""The batch prediction job kind: ``predictionInput`` → workers that score the input files
with the model's predictor and write AI Platform's output files.

- validate: the spec (:mod:`.spec`); the model (a READY version or the model's default
  version, of any project: the API checked the creator's ``ml.models.predict`` on the model;
  or a directory whose framework is detected as for versions); every input pattern matches a
  file; the output path is allowed, writable by the workers and empty; on a Ray cluster of
  several machines, inputs and output are not local paths. Each refusal is a 400 naming the field.
- plan: ``maxWorkerCount`` workers (default: this machine's CPUs, at most 10), 1 CPU each.
- prepare: the model is copied into the job's directory (the workers read only that copy and
  the version's environment), the inputs are planned into shards once and the plan stored with
  the output (:mod:`.layout`), so retries and restarts resume from the shards not yet done.
- outcome: live ``predictionOutput`` from the shard records; when every worker has exited 0,
  the error stats are written and the job succeeds, unless every instance failed. A worker
  killed by a signal (or lost) queues the job again (``maxRetries``, default 3): it resumes.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mlengine.batch import shards
from mlengine.batch.layout import Counts, Output
from mlengine.batch.spec import DEFAULT_MAX_WORKERS, model_reference, validate_prediction_input
from mlengine.core.names import validate_job_id, validate_labels
from mlengine.core.timeutil import utcnow
from mlengine.errors import MLEngineError, invalid
from mlengine.jobs.executors import Placement, ReplicaRequest
from mlengine.jobs.kinds import JobKind, KindContext, Outcome, ReplicaCommand, ReplicaResult, SandboxPaths, Submission
from mlengine.jobs.lifecycle import FAILED, SUCCEEDED
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.resources import Resources
from mlengine.jobs.sandboxing import job_dir_problem
from mlengine.storage.policy import uri_policy
from mlengine.store.models import JobRow

#: How often a running job's ``predictionOutput`` is refreshed from its output directory.
PROGRESS_SECONDS = 1.0


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def multi_machine(addresses: list[str]) -> list[str]:
    """The distinct machines among Ray nodes' addresses: loopback addresses (the suite's
    127.0.0.2, 127.0.0.3...) are all this machine."""
    machines = sorted({"this machine" if a.startswith("127.") or a in ("::1", "localhost") else a
                       for a in addresses})
    return machines


def ray_machines() -> list[str]:
    """The machines of the Ray cluster the executor is connected to (none when not connected)."""
    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
            return []
        return multi_machine([n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")])
    except Exception:  # the cluster cannot be asked: the executor will say so when it places the job
        return []


class BatchPredictionKind(JobKind):
    name: ClassVar[str] = "batch_prediction"
    input_field: ClassVar[str] = "predictionInput"
    output_field: ClassVar[str] = "predictionOutput"

    def __init__(self, context: KindContext) -> None:
        from mlengine.store.serving import ServingRepository

        self.context = context
        self.settings = context.settings
        self.serving = ServingRepository(context.db)
        self._refreshed: dict[int, float] = {}
        self._lock = threading.Lock()

    # Submission -----------------------------------------------------------------------------
    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        job_id = validate_job_id(body.get("jobId"))
        labels = validate_labels(body.get("labels"))
        spec = validate_prediction_input(body.get("predictionInput"))
        pi = spec.input
        self._check_model(project, pi)
        self._check_paths(pi)
        output = {"outputPath": pi["outputPath"], "predictionCount": "0", "errorCount": "0", "nodeHours": 0.0}
        return Submission(job_id, pi, labels, max_running_seconds=spec.max_running_seconds, output=output,
                          max_retries=spec.max_retries)

    def _version(self, pi: Mapping[str, Any]) -> tuple[Any, Any, str]:
        """The model and version rows a ``modelName``/``versionName`` names, and the field."""
        field = "predictionInput.modelName" if pi.get("modelName") else "predictionInput.versionName"
        # The model may be another project's: the API checked the creator's ml.models.predict on it.
        project, model_name, version_name = model_reference(pi.get("modelName") or pi["versionName"], field,
                                                            field.endswith("versionName"))
        try:
            model = self.serving.get_model(project, model_name)
        except MLEngineError:
            raise invalid(field, f"model {model_name} does not exist in project {project}") from None
        if version_name is None:
            version_name = model.default_version
            if not version_name:
                raise invalid(field, f"model {model_name} has no default version; name one with versionName")
        try:
            version = self.serving.get_version(model, version_name)
        except MLEngineError:
            raise invalid(field, f"version {version_name} of model {model_name} does not exist") from None
        if version.state != "READY":
            raise invalid(field, f"version {version_name} of model {model_name} is {version.state}, not READY")
        return model, version, field

    def _check_model(self, project: str, pi: Mapping[str, Any]) -> None:
        if not pi.get("uri"):
            self._version(pi)
            return
        from mlengine.prediction import deploy, specs
        from mlengine.storage import uris

        uri = pi["uri"]
        try:
            specs.check_deployment_uri(uri, uri_policy(self.settings))
            if uris.is_local(uri):
                source = deploy.inspect_source(uri, self.settings.model_max_files, self.settings.model_max_bytes)
                framework = deploy.resolve_framework(source, None, None)
                if not self.settings.model_allow_pickle:
                    deploy.refuse_pickle(uri, source.top_level, framework, None)
        except MLEngineError as err:
            raise invalid("predictionInput.uri", err.message.replace("deploymentUri", "uri")) from None

    def _check_paths(self, pi: Mapping[str, Any]) -> None:
        from mlengine.storage import uris

        policy = uri_policy(self.settings)
        machines = ray_machines() if self.settings.executor == "ray" else []
        if len(machines) > 1:  # workers on other machines would not see this machine's files
            local = [(f"predictionInput.inputPaths[{i}]", p) for i, p in enumerate(pi["inputPaths"])
                     if uris.is_local(p)]
            if uris.is_local(pi["outputPath"]):
                local.append(("predictionInput.outputPath", pi["outputPath"]))
            if local:
                field, path = local[0]
                raise invalid(field, f"{path} is a local path, but the Ray cluster spans {len(machines)} machines "
                              f"({', '.join(machines)}): workers on the others would not see it; use a URI "
                              "every node reads (s3://..., gs://...)")
        for i, pattern in enumerate(pi["inputPaths"]):
            field = f"predictionInput.inputPaths[{i}]"
            uris.check_usable(pattern, field)
            policy.check(pattern, field)
        shards.expand(pi["inputPaths"])
        out = pi["outputPath"]
        uris.check_usable(out, "predictionInput.outputPath")
        policy.check(out, "predictionInput.outputPath")
        if uris.is_local(out):
            problem = job_dir_problem(self.settings, uris.local_path(out))
            if problem:
                raise invalid("predictionInput.outputPath", problem.replace("trainers", "batch prediction workers"))
        try:
            empty = Output(out).is_empty()
        except Exception as err:  # an object store that cannot be listed
            raise invalid("predictionInput.outputPath", f"cannot list {out}: {err}") from None
        if not empty:
            raise invalid("predictionInput.outputPath", f"{out} exists and is not empty; use a new directory")

    # Running --------------------------------------------------------------------------------
    def workers(self, job: JobRow) -> int:
        asked = job.input.get("maxWorkerCount")
        return int(asked) if asked else max(1, min(DEFAULT_MAX_WORKERS, os.cpu_count() or 1))

    def plan(self, job: JobRow) -> list[ReplicaRequest]:
        return [ReplicaRequest("worker", i, Resources(1.0, 0.0, 0)) for i in range(self.workers(job))]

    def _stage_model(self, job: JobRow, dest: Path) -> dict[str, Any]:
        """Copy the model into the job's directory; what the workers load it with."""
        from mlengine.prediction import deploy

        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        pi = job.input
        if pi.get("uri"):
            source = deploy.inspect_source(pi["uri"], self.settings.model_max_files, self.settings.model_max_bytes)
            framework = deploy.resolve_framework(source, None, None)
            if not self.settings.model_allow_pickle:
                deploy.refuse_pickle(pi["uri"], source.top_level, framework, None)
            deploy.stage(source, dest)
            return {"framework": framework, "pythonpath": []}
        _model, version, _field = self._version(pi)
        shutil.copytree(version.internal["modelDir"], dest, symlinks=False)
        spec = version.spec or {}
        return {"framework": version.internal["framework"], "predictionClass": spec.get("predictionClass"),
                "frameworkHint": spec.get("framework"), "pythonpath": list(version.internal.get("pythonpath") or [])}

    def prepare(self, job: JobRow, paths: JobPaths, log: Any) -> Any:
        model_dir = paths.root / "model"
        model = self._stage_model(job, model_dir)
        log(f"Model ready ({model['framework']}).")
        pi = job.input
        output = Output(pi["outputPath"])
        plan = output.plan()
        if plan is None:
            files = shards.expand(pi["inputPaths"])
            policy = uri_policy(self.settings)
            for uri in files:  # a match may be a link into the server's files
                policy.check(uri, f"predictionInput.inputPaths (file {uri})")
            planned = shards.plan(files, pi["dataFormat"], self.workers(job))
            plan = {"files": files, "total": sum(s.count for s in planned), "shards": [s.to_json() for s in planned]}
            output.save_plan(plan)
            log(f"Planned {plan['total']} instances from {len(files)} file(s) in {len(planned)} shard(s).")
        else:
            log(f"Resuming: {len(output.done())} of {len(plan['shards'])} shard(s) already done.")
        total = int(plan["total"])
        self.context.repo.update(job.id, lambda r: setattr(
            r, "output", {**(r.output or {}), "instanceCount": str(total)}))
        return {**model, "modelDir": str(model_dir), "allowPickle": self.settings.model_allow_pickle,
                "dataFormat": pi["dataFormat"], "outputDataFormat": pi.get("outputDataFormat", "JSON"),
                "outputPath": pi["outputPath"], "batchSize": int(pi.get("batchSize", 64)),
                "keyField": pi.get("keyField"), "signatureName": pi.get("signatureName")}

    def command(self, job: JobRow, prepared: Any, placement: Placement, position: int,
                paths: JobPaths) -> ReplicaCommand:
        import json

        # The host the executor placed the worker on, for its log lines (which node did what).
        config = {**prepared, "worker": position, "workers": len(placement.replicas),
                  "host": placement.replicas[position].host}
        argv = [sys.executable, "-I", "-m", "mlengine.batch.worker", "--config", json.dumps(config)]
        return ReplicaCommand(argv, {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})

    def sandbox_paths(self, job: JobRow, prepared: Any, paths: JobPaths) -> SandboxPaths:
        """Read the model copy and the version's environment; write the output directory."""
        from mlengine.storage import uris

        readable = (prepared["modelDir"], *prepared.get("pythonpath", ()))
        out = job.input["outputPath"]
        writable = (str(uris.local_path(out)),) if uris.is_local(out) else ()
        return SandboxPaths(tuple(readable), writable)

    def outcome(self, job: JobRow, replicas: list[ReplicaResult]) -> Outcome | None:
        for replica in replicas:
            if replica.status.failed:
                return Outcome(FAILED, replica.status.describe(replica.task_name))
        finished = bool(replicas) and all(r.status.finished for r in replicas)
        if not finished:
            self._refresh(job, len(replicas))
            return None
        return self._finish(job, len(replicas))

    def _node_hours(self, job: JobRow, workers: int) -> float:
        if job.start_time is None:
            return 0.0
        start = job.start_time if job.start_time.tzinfo else job.start_time.replace(tzinfo=utcnow().tzinfo)
        return round(workers * max(0.0, (utcnow() - start).total_seconds()) / 3600.0, 6)

    def _refresh(self, job: JobRow, workers: int) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed.get(job.id, 0.0) < PROGRESS_SECONDS:
                return
            self._refreshed[job.id] = now
        try:
            output = Output(job.input["outputPath"])
            counts = Counts()
            for shard_counts in output.done().values():
                counts.add(shard_counts)
            running = sum(_int(p.get("done")) for p in output.progress().values() if p.get("shard") is not None)
        except Exception:  # progress is best effort; the outcome does not depend on it
            return
        self._store(job, counts, workers, running)

    def _store(self, job: JobRow, counts: Counts, workers: int, running: int = 0) -> None:
        values = {"predictionCount": str(counts.predictions), "errorCount": str(counts.errors),
                  "nodeHours": self._node_hours(job, workers)}
        if running:
            values["pendingCount"] = str(running)  # instances of shards in progress, not yet committed
        else:
            values["pendingCount"] = None

        def change(row: JobRow) -> None:
            merged = {**(row.output or {}), **values}
            row.output = {k: v for k, v in merged.items() if v is not None}

        self.context.repo.update(job.id, change)

    def _finish(self, job: JobRow, workers: int) -> Outcome:
        output = Output(job.input["outputPath"])
        plan = output.plan()
        if plan is None:  # finalized by an earlier pass that could not record the outcome
            return Outcome(SUCCEEDED)
        done = output.done()
        missing = [s["index"] for s in plan["shards"] if s["index"] not in done]
        if missing:
            return Outcome(FAILED, f"{len(missing)} shard(s) were not done by any worker (first: {missing[0]}).")
        counts = Counts()
        for shard_counts in done.values():
            counts.add(shard_counts)
        output.finalize(counts)
        self._store(job, counts, workers)
        with self._lock:
            self._refreshed.pop(job.id, None)
        if counts.errors and not counts.predictions:
            top = max(counts.stats.items(), key=lambda kv: kv[1][0])[0] if counts.stats else "unknown"
            return Outcome(FAILED, f"Every instance failed ({counts.errors}); the most frequent error: {top}")
        return Outcome(SUCCEEDED)

    def render(self, job: JobRow) -> dict[str, Any]:
        return {"predictionInput": job.input or {}, "predictionOutput": job.output or {}}
