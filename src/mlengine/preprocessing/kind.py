"""The preprocessing job kind: ``preprocessingInput`` → an Apache Beam pipeline, packaged like a
trainer, run by the DirectRunner on one machine or by Beam's DaskRunner on a Dask cluster.

- validate: :mod:`.spec`; package URIs and ``jobDir`` as a training job's (URI policy, archives
  opened, a local jobDir writable by user code);
- plan: DirectRunner: one ``driver`` replica asking for ``workerCount`` CPUs (Beam's
  ``direct_num_workers``). DaskRunner: a ``driver`` (Dask scheduler + the pipeline, a quarter
  CPU: it mostly waits) and ``workerCount`` ``worker`` replicas (one Dask worker process, one
  thread, one CPU each), placed by the executor like a training gang (local processes or Ray);
  with ``daskAddress`` only the driver, which submits to that existing cluster;
- prepare: the packages and Apache Beam (:data:`BEAM_REQUIREMENTS`) in a cached environment
  layered on the server's (Beam pins protobuf and pyarrow below the server's versions: the
  overlay shadows them for the job's processes only);
- command: ``python -m mlengine.preprocessing.launcher`` (:mod:`.launcher`) in that environment,
  under the same sandbox as training replicas (the job's environment readable, jobDir writable);
- outcome: the driver exiting 0 succeeds the job (Dask workers are then stopped); any replica
  failing fails it. On success, ``preprocessingOutput`` records the transform the pipeline
  analysed, if it wrote one: ``<jobDir>/transform/transform.json`` with a ``fingerprint``
  (``transformFingerprint``, ``transformUri``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from mlengine.core.runtimes import BEAM_REQUIREMENTS
from mlengine.errors import Code, MLEngineError
from mlengine.jobs.executors import Placement, ReplicaRequest
from mlengine.jobs.kinds import JobKind, KindContext, Outcome, ReplicaCommand, ReplicaResult, SandboxPaths, Submission
from mlengine.jobs.lifecycle import FAILED, SUCCEEDED
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.resources import Resources
from mlengine.preprocessing.spec import FIELD, PORTABLE_MODULE, validate_preprocessing_input, workers
from mlengine.storage.policy import uri_policy
from mlengine.store.models import JobRow
from mlengine.training.kind import check_uris, local_job_dir
from mlengine.training.preparation import fetch_packages

#: Where a pipeline leaves the transform it analysed, relative to its jobDir.
TRANSFORM_FILE = "transform/transform.json"
DRIVER, WORKER = "driver", "worker"
DRIVER_CPUS_WITH_DASK = 0.25


def read_transform(job_dir: str | None) -> dict[str, Any] | None:
    """``{"transformFingerprint", "transformUri"}`` from a local jobDir's transform file."""
    from pathlib import Path

    if not job_dir:
        return None
    path = Path(job_dir) / TRANSFORM_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(fingerprint, str):
        return None
    return {"transformFingerprint": fingerprint, "transformUri": str(path.parent)}


class PreprocessingKind(JobKind):
    name: ClassVar[str] = "preprocessing"
    input_field: ClassVar[str] = "preprocessingInput"
    output_field: ClassVar[str] = "preprocessingOutput"

    def __init__(self, context: KindContext, env_cache: Any) -> None:
        self.context = context
        self.env_cache = env_cache

    # Submission -----------------------------------------------------------------------------
    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        from mlengine.core.names import validate_job_id, validate_labels

        job_id = validate_job_id(body.get("jobId"))
        labels = validate_labels(body.get("labels"))
        spec = validate_preprocessing_input(body.get(FIELD))
        try:
            check_uris(spec.input, self.context.settings)
        except MLEngineError as err:  # the training check names trainingInput's fields
            raise MLEngineError(err.code, err.message.replace("trainingInput.", f"{FIELD}.")) from None
        pi = spec.input
        if pi.get("pipelineUri"):
            self._check_pipeline(pi["pipelineUri"])
        output = {"runner": pi["runner"], "workerCount": pi["workerCount"]}
        return Submission(job_id, pi, labels, spec.max_running_seconds, spec.max_wait_seconds, output=output)

    def _check_pipeline(self, uri: str) -> None:
        from mlengine.storage import uris

        field = f"{FIELD}.pipelineUri"
        uris.check_usable(uri, field)
        uri_policy(self.context.settings).check(uri, field)
        if not uris.is_local(uri) or not uris.local_path(uri).is_file():
            raise MLEngineError(Code.INVALID_ARGUMENT,
                                f"Field: {field} Error: {uri} is not a file on the server's file system")

    # Running --------------------------------------------------------------------------------
    def plan(self, job: JobRow) -> list[ReplicaRequest]:
        pi = job.input
        count = workers(pi)
        if pi["runner"] == "DirectRunner":
            return [ReplicaRequest(DRIVER, 0, Resources(float(count), 0.0, 0))]
        if pi.get("daskAddress"):
            return [ReplicaRequest(DRIVER, 0, Resources(DRIVER_CPUS_WITH_DASK, 0.0, 0))]
        return [ReplicaRequest(DRIVER, 0, Resources(DRIVER_CPUS_WITH_DASK, 0.0, 0)),
                *(ReplicaRequest(WORKER, i, Resources(1.0, 0.0, 0)) for i in range(count))]

    def prepare(self, job: JobRow, paths: JobPaths, log: Any) -> Any:
        packages = fetch_packages(job, paths, uri_policy(self.context.settings))
        log(f"Preparing the pipeline's environment (packages and {', '.join(BEAM_REQUIREMENTS)})")
        return self.env_cache.prepare(packages, log=log, requirements=BEAM_REQUIREMENTS)

    def sandbox_paths(self, job: JobRow, prepared: Any, paths: JobPaths) -> SandboxPaths:
        env_dirs = [*getattr(prepared, "pythonpath", ()), *getattr(prepared, "bin_dirs", ())]
        job_dir = local_job_dir(job.input)
        readable = [str(p) for p in env_dirs]
        if job.input.get("pipelineUri"):
            from mlengine.storage import uris

            readable.append(str(uris.local_path(job.input["pipelineUri"])))
        return SandboxPaths(tuple(readable), (job_dir,) if job_dir else ())

    def command(self, job: JobRow, prepared: Any, placement: Placement, position: int,
                paths: JobPaths) -> ReplicaCommand:
        pi = job.input
        me = placement.replicas[position]
        driver = placement.replicas[0]
        config: dict[str, Any] = {
            "role": me.task_type, "module": pi.get("pythonModule") or PORTABLE_MODULE,
            "args": ["--pipeline", pi["pipelineUri"]] if pi.get("pipelineUri") else pi.get("args", []),
            "jobDir": pi.get("jobDir"), "runner": pi["runner"], "workers": workers(pi),
            "mode": pi.get("directRunningMode", "multi_processing"), "host": me.host, "port": me.port,
            "scheduler": pi.get("daskAddress") or f"tcp://{driver.host}:{driver.port}",
            "ownScheduler": not pi.get("daskAddress"),
        }
        argv = [prepared.python, "-m", "mlengine.preprocessing.launcher", "--config", json.dumps(config)]
        env = {**prepared.env_vars(), "PYTHONUNBUFFERED": "1", "CLOUD_ML_JOB_ID": job.job_id,
               "MLE_PREPROCESSING_RUNNER": pi["runner"]}
        return ReplicaCommand(argv, env)

    def outcome(self, job: JobRow, replicas: list[ReplicaResult]) -> Outcome | None:
        for replica in replicas:
            if replica.status.failed:
                return Outcome(FAILED, replica.status.describe(replica.task_name))
        driver = next((r for r in replicas if r.task_type == DRIVER), None)
        if driver is None or not (driver.status.state == "exited" and driver.status.exit_code == 0):
            return None
        transform = read_transform(local_job_dir(job.input))
        if transform:
            self.context.repo.update(job.id, lambda row: setattr(row, "output", {**(row.output or {}), **transform}))
        return Outcome(SUCCEEDED)

    def render(self, job: JobRow) -> dict[str, Any]:
        return {FIELD: job.input or {}, "preprocessingOutput": job.output or {}}
