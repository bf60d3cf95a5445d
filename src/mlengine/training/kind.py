"""The training job kind: ``trainingInput`` → a gang of trainer replicas (master/chief,
workers, parameter servers, evaluators) running the user's package.

- validate: :func:`~mlengine.training.jobspec.validate_training_input`, machine types, and the
  URIs the server will read (package archives are opened and checked);
- plan: one replica per task, asking for its machine type's resources;
- runtime: ``runtimeVersion``, ``pythonVersion`` or a pre-built ``imageUri`` resolved by
  :func:`mlengine.core.runtimes.resolve`: a configured runtime's requirements go into the job's
  environment; any difference from what was asked is a warning on the job (``warnings``) and in
  its log;
- prepare: fetch the packages, install them (and the runtime's requirements) into a cached
  environment, check the module exists;
- command: ``python -m MODULE ARGS [--job-dir DIR]`` with ``TF_CONFIG``, ``CLUSTER_SPEC``,
  ``CLOUD_ML_*`` and the PyTorch rendezvous variables;
- sandbox: replicas read the job's environment and write its hypertune directory and local
  ``jobDir`` (which ``validate`` requires inside ``MLE_SANDBOX_WRITABLE``);
- outcome: the chief (``master``/``chief``) exiting 0 succeeds the job (parameter servers never
  exit on their own); any replica failing fails it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mlengine.config import Settings
from mlengine.core.names import validate_job_id, validate_labels
from mlengine.core.runtimes import RuntimeChoice, resolve
from mlengine.errors import MLEngineError, invalid
from mlengine.jobs.executors import Placement, ReplicaRequest
from mlengine.jobs.kinds import (
    JobKind,
    KindContext,
    Outcome,
    ReplicaCommand,
    ReplicaResult,
    SandboxPaths,
    Submission,
)
from mlengine.jobs.lifecycle import FAILED, SUCCEEDED
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.sandboxing import job_dir_problem
from mlengine.storage.policy import uri_policy
from mlengine.store.models import JobRow
from mlengine.training import cluster
from mlengine.training.jobspec import image_field, prebuilt_image, validate_training_input
from mlengine.training.machines import machine_table, replica_resources
from mlengine.training.preparation import ModuleProbe, fetch_packages

CHIEF_TYPES = ("master", "chief")


def replica_requests(training_input: Mapping[str, Any], table: Mapping[str, Any]) -> list[ReplicaRequest]:
    """One request per replica, in launch order, asking for its machine type's resources."""
    counts = cluster.replica_counts(training_input)
    per_type = replica_resources(training_input, counts, table)
    return [ReplicaRequest(task_type, index, per_type[task_type])
            for task_type in cluster.TASK_ORDER for index in range(counts.get(task_type, 0))]


def local_job_dir(training_input: Mapping[str, Any]) -> str | None:
    """The job's ``jobDir`` as a local path (None when unset or remote)."""
    from mlengine.storage import uris

    job_dir = training_input.get("jobDir")
    if not job_dir or not uris.is_local(job_dir):
        return None
    return str(uris.local_path(job_dir))


def check_uris(training_input: Mapping[str, Any], settings: Settings | None = None) -> None:
    """Package URIs must be allowed by the server's URI policy (no server-side request forgery)
    and usable (local archives are opened and checked); so must jobDir, which trainers must be
    able to write (inside ``MLE_SANDBOX_WRITABLE``, outside the server's files)."""
    from mlengine.core.packaging import validate_package_archive
    from mlengine.storage import uris

    policy = uri_policy(settings) if settings is not None else None
    for i, uri in enumerate(training_input["packageUris"]):
        field = f"trainingInput.packageUris[{i}]"
        uris.check_usable(uri, field)
        if policy is not None:
            policy.check(uri, field)
        if uris.is_local(uri):
            path = uris.local_path(uri)
            if not path.is_file():
                raise invalid(field, f"{uri} does not exist or is not a file readable by the server")
            try:
                validate_package_archive(path)
            except MLEngineError as exc:
                raise invalid(field, exc.message) from None
    job_dir = training_input.get("jobDir")
    if job_dir:
        uris.check_usable(job_dir, "trainingInput.jobDir")
        if policy is not None:
            policy.check(job_dir, "trainingInput.jobDir")
    local = local_job_dir(training_input)
    if local and settings is not None:
        problem = job_dir_problem(settings, Path(local))
        if problem:
            raise invalid("trainingInput.jobDir", problem)


class TrainingKind(JobKind):
    name: ClassVar[str] = "training"
    input_field: ClassVar[str] = "trainingInput"
    output_field: ClassVar[str] = "trainingOutput"

    def __init__(self, context: KindContext, env_cache: Any) -> None:
        self.context = context
        self.env_cache = env_cache
        # The probe runs in a directory of its own (never MLE_HOME, which confined code cannot read).
        probe_dir = Path(tempfile.gettempdir())
        self._module_probe = ModuleProbe(probe_dir, getattr(env_cache, "confinement", None))

    def accepts(self, body: Mapping[str, Any]) -> bool:
        ti = body.get("trainingInput")
        return ti is not None and not (isinstance(ti, Mapping) and ti.get("hyperparameters") is not None)

    def _table(self) -> Mapping[str, Any]:
        return machine_table(self.context.settings.machine_types_path)

    def runtime(self, training_input: Mapping[str, Any]) -> RuntimeChoice:
        """What serves the job's runtimeVersion/pythonVersion/pre-built image, with its warnings."""
        return resolve(self.context.settings.runtime_table, runtime_version=training_input.get("runtimeVersion"),
                       python_version=training_input.get("pythonVersion"), image=prebuilt_image(training_input),
                       image_field=image_field(training_input))

    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        job_id = validate_job_id(body.get("jobId"))
        labels = validate_labels(body.get("labels"))
        spec = validate_training_input(body.get("trainingInput"))
        replica_requests(spec.training_input, self._table())  # unknown machine types, bad accelerators
        check_uris(spec.training_input, self.context.settings)
        return Submission(job_id, spec.training_input, labels, spec.max_running_seconds, spec.max_wait_seconds,
                          max_retries=spec.max_retries, kind_state=self.runtime(spec.training_input).record())

    def plan(self, job: JobRow) -> list[ReplicaRequest]:
        return replica_requests(job.input, self._table())

    def prepare(self, job: JobRow, paths: JobPaths, log: Any) -> Any:
        packages = fetch_packages(job, paths, uri_policy(self.context.settings))
        choice = self.runtime(job.input)
        for warning in choice.warnings:
            log(warning, "WARNING")
        if choice.runtime is not None:
            log(f"Runtime {choice.runtime} (MLE_RUNTIMES): {', '.join(choice.requirements) or 'no requirements'}")
        env = self.env_cache.prepare(packages, log=log, requirements=choice.requirements)
        self._module_probe.check(job, env)
        paths.metric_file.parent.mkdir(parents=True, exist_ok=True)
        return env

    def hyperparameters(self, job: JobRow) -> dict[str, Any] | None:
        """``--name=value`` arguments of a tuning trial (none for a plain training job)."""
        return None

    def trial_id(self, job: JobRow) -> str | None:
        return None

    def sandbox_paths(self, job: JobRow, prepared: Any, paths: JobPaths) -> SandboxPaths:
        """Read the job's environment; write its hypertune directory and local jobDir."""
        env_dirs = [*getattr(prepared, "pythonpath", ()), *getattr(prepared, "bin_dirs", ())]
        readable = tuple(str(p) for p in env_dirs)
        writable = [str(paths.metric_file.parent)]
        job_dir = local_job_dir(job.input)
        if job_dir:
            writable.append(job_dir)
        return SandboxPaths(readable, tuple(writable))

    def command(self, job: JobRow, prepared: Any, placement: Placement, position: int,
                paths: JobPaths) -> ReplicaCommand:
        ti = job.input
        me = placement.replicas[position]
        argv = cluster.trainer_argv(prepared.python, ti["pythonModule"], ti.get("args", []),
                                    ti.get("jobDir"), self.hyperparameters(job))
        env = {
            **prepared.env_vars(),
            **cluster.replica_environment(
                job_id=job.job_id, replicas=placement.replicas, me=me, training_input=ti,
                metric_file=str(paths.metric_file), trial=self.trial_id(job),
            ),
        }
        return ReplicaCommand(argv, env)

    def outcome(self, job: JobRow, replicas: list[ReplicaResult]) -> Outcome | None:
        for replica in replicas:
            if replica.status.failed:
                return Outcome(FAILED, replica.status.describe(replica.task_name))
        chief = next((r for r in replicas if r.task_type in CHIEF_TYPES), None)
        if chief is not None and chief.status.state == "exited" and chief.status.exit_code == 0:
            return Outcome(SUCCEEDED)
        return None
