"""The ``tensorboard`` service kind: TensorBoard over a log directory, behind the proxy.

Spec: ``logdir`` (required: a local path or any fsspec URI the server's URI policy allows),
``job`` (optional, informational: the ``projects/P/jobs/J`` it shows), ``idleTimeoutSeconds``
(default 1800: an unused TensorBoard stops, the next request through the proxy starts it
again; ``0`` never).

- TensorBoard runs under the replica sandbox (:mod:`mlengine.core.sandbox`): the server's home,
  database and the server user's credentials are hidden from it, the environment is the
  replicas' allow-list (``env -i``), and its only writable places are its own ``home`` and
  ``tmp`` in the service's directory. Its logdir is readable (created if missing, so that a
  TensorBoard started with its job sees what the job writes later).
- It runs without TensorFlow (TensorBoard's own stub, forced by a ``tensorboard.compat.notf``
  module): it starts in seconds, and reading event files needs nothing else.
- Only the proxy reaches it: TensorBoard has no authentication of its own, so
  :mod:`.tensorboard_main` answers 403 to a request without the service's upstream key (fresh
  at every start, 0600 in the service's directory), which the proxy sends
  (:meth:`TensorBoardKind.upstream_headers`). Another local process connecting to the port
  reads no job's logs.
- A logdir that is not local (``gs://``, ``s3://``, ``memory://``...) is copied into a cache in
  the service's directory every ``SYNC_SECONDS`` by :mod:`.tensorboard_sync`, which runs
  *outside* the sandbox (it is mlengine's code, and it needs the server user's cloud
  credentials, which the sandbox hides) and starts the confined TensorBoard over the cache.

:func:`ensure_tensorboard` and :func:`ensure_job_tensorboard` give (creating or starting it) the
TensorBoard of a log directory or of a job, for the API, the console and ``mle tensorboard``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlengine.errors import Code, MLEngineError, failed_precondition, invalid
from mlengine.services._base import (
    UPSTREAM_KEY_HEADER,
    ServiceCommand,
    ServiceInstance,
    ServiceKind,
    ServicePolicy,
    new_secret,
    read_secret,
)

KIND = "tensorboard"
DEFAULT_IDLE_SECONDS = 1800.0
SYNC_SECONDS = 10.0
RELOAD_SECONDS = 3
#: Runs TensorBoard's main with its TensorFlow stub, answering only requests with the key.
LAUNCHER = "mlengine.services.kinds.tensorboard_main"
#: The upstream key, fresh at every start, in the service's private ``home`` (TensorBoard's
#: sandbox reads it there; every other sandboxed process has the service directory hidden).
KEY_FILE = "home/upstream_key"
_FIELDS = ("logdir", "job", "idleTimeoutSeconds")


class TensorBoardKind(ServiceKind):
    name = KIND

    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        from mlengine.storage import uris
        from mlengine.storage.policy import uri_policy

        for key in spec:
            if key not in _FIELDS:
                raise invalid(f"spec.{key}", f"unknown field; a tensorboard service takes {', '.join(_FIELDS)}")
        logdir = spec.get("logdir")
        if not isinstance(logdir, str) or not logdir.strip():
            raise invalid("spec.logdir", "is required: the directory (path or URI) TensorBoard reads")
        uris.check_usable(logdir, "spec.logdir")
        uri_policy(self.context.settings).check(logdir, "spec.logdir")
        if uris.is_local(logdir):
            logdir = str(uris.local_path(logdir))
        out: dict[str, Any] = {"logdir": logdir}
        job = spec.get("job")
        if job is not None:
            if not isinstance(job, str) or not job.startswith("projects/") or job.count("/") != 3:
                raise invalid("spec.job", "must be a job name, projects/PROJECT/jobs/JOB")
            out["job"] = job
        idle = spec.get("idleTimeoutSeconds", DEFAULT_IDLE_SECONDS)
        if not isinstance(idle, (int, float)) or isinstance(idle, bool) or not 0 <= idle <= 7 * 86400:
            raise invalid("spec.idleTimeoutSeconds", "must be a number of seconds from 0 (never) to 604800")
        out["idleTimeoutSeconds"] = float(idle)
        return out

    def command(self, instance: ServiceInstance) -> ServiceCommand:
        from mlengine.storage import uris

        settings = self.context.settings
        root = instance.directory
        home, tmp, cache = root / "home", root / "tmp", root / "cache"
        logdir = str(instance.spec["logdir"])
        local = uris.is_local(logdir)
        reads = logdir if local else str(cache)
        try:  # Landlock rules name existing directories; a job's jobDir may not exist yet
            Path(reads).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MLEngineError(Code.FAILED_PRECONDITION, f"Cannot create the logdir {reads}: {exc}") from None
        env = {k: v for k, v in os.environ.items() if _inherited(settings, k)}
        env.update({"HOME": str(home), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"})
        new_secret(root / KEY_FILE)
        tensorboard = [
            sys.executable, "-m", LAUNCHER, str(root / KEY_FILE), "--logdir", reads, "--host", instance.host,
            "--port", str(instance.port), "--path_prefix", instance.url_prefix.rstrip("/"),
            "--reload_interval", str(RELOAD_SECONDS), "--load_fast", "false", "--window_title",
            str(instance.spec.get("job") or logdir),
        ]
        # `env -i`: TensorBoard gets the replicas' allow-listed environment, not the server's.
        confined = ["env", "-i", *(f"{k}={v}" for k, v in sorted(env.items())),
                    *_confined_prefix(settings, root, reads), *tensorboard]
        if local:
            return ServiceCommand(argv=confined, cwd=root)
        sync = [sys.executable, "-m", "mlengine.services.kinds.tensorboard_sync", logdir, str(cache),
                str(SYNC_SECONDS), "--"]
        return ServiceCommand(argv=[*sync, *confined], env={"PYTHONUNBUFFERED": "1"}, cwd=root)

    def health_path(self, instance: ServiceInstance) -> str:
        return instance.url_prefix + "data/environment"

    def upstream_headers(self, instance: ServiceInstance) -> dict[str, str]:
        key = read_secret(instance.directory / KEY_FILE)
        return {UPSTREAM_KEY_HEADER: key} if key else {}

    def policy(self, spec: Mapping[str, Any]) -> ServicePolicy:
        idle = float(spec.get("idleTimeoutSeconds", DEFAULT_IDLE_SECONDS))
        return ServicePolicy(start_timeout_seconds=60.0, health_interval_seconds=10.0,
                             idle_timeout_seconds=idle or None, stop_grace_seconds=5.0)


def _confined_prefix(settings: Any, service_dir: Path, reads: str) -> list[str]:
    """``python -I -m mlengine.core.confined POLICY --``: what follows runs in the sandbox,
    reading ``reads`` and writing only the service's ``home`` and ``tmp``."""
    from mlengine.core.sandbox import SandboxPolicy
    from mlengine.jobs.sandboxing import hidden_paths

    private = (str(service_dir / "home"), str(service_dir / "tmp"))
    if settings.sandbox == "off":
        policy = SandboxPolicy(private=private, landlock=False)
    else:
        policy = SandboxPolicy(hidden=tuple(os.path.realpath(p) for p in hidden_paths(settings)),
                               readable=(os.path.realpath(reads),), private=private)
    return [sys.executable, "-I", "-m", "mlengine.core.confined", policy.to_json(), "--"]


def _inherited(settings: Any, name: str) -> bool:
    from mlengine.core.sandbox import env_allowed
    from mlengine.jobs.sandboxing import inherited_env

    return env_allowed(name, inherited_env(settings))


# Finding or starting the TensorBoard of a directory or a job ---------------------------------

def logdir_service_name(logdir: str) -> str:
    """The service of ``mle tensorboard --logdir URI``: ``tb-`` and a digest of the URI."""
    return "tb-" + hashlib.sha256(logdir.encode()).hexdigest()[:16]


def job_service_name(job_id: str) -> str:
    """The service showing a job: ``tb-<jobId>`` (a stable URL for the job's page)."""
    return f"tb-{job_id}"


def job_logdir(job_input: Mapping[str, Any] | None) -> str | None:
    """What a job's TensorBoard reads: its ``jobDir`` (trials of a tuning job write below it)."""
    job_dir = (job_input or {}).get("jobDir")
    return job_dir if isinstance(job_dir, str) and job_dir else None


def ensure_tensorboard(manager: Any, project: str, name: str, logdir: str, job: str | None = None) -> Any:
    """The service row of TensorBoard ``name`` over ``logdir``: created if missing, started if
    stopped or failed (a STARTING or RUNNING one is returned as is). ``manager`` is the
    server's :class:`~mlengine.services.manager.ServiceManager`."""
    spec: dict[str, Any] = {"logdir": logdir}
    if job:
        spec["job"] = job
    try:
        row = manager.get(project, name)
    except MLEngineError as err:
        if err.code is not Code.NOT_FOUND:
            raise
        try:
            return manager.create(project, {"name": name, "kind": KIND, "spec": spec})
        except MLEngineError as again:
            if again.code is not Code.ALREADY_EXISTS:  # a concurrent call created it
                raise
            row = manager.get(project, name)
    if row.kind != KIND:
        raise failed_precondition(f"Service projects/{project}/services/{name} exists and is a {row.kind}, "
                                  "not a tensorboard.")
    if row.state in ("STOPPED", "FAILED"):
        return manager.start_service(project, name)
    return row


def ensure_job_tensorboard(manager: Any, project: str, job_id: str, job_input: Mapping[str, Any] | None) -> Any:
    """The TensorBoard of a job (its ``jobDir``), created or started as needed; 400
    FAILED_PRECONDITION if the job has no ``jobDir`` (``mle tensorboard --logdir`` then)."""
    logdir = job_logdir(job_input)
    if logdir is None:
        raise failed_precondition(f"Job {job_id} has no jobDir for TensorBoard to read; "
                                  "give its log directory instead (mle tensorboard --logdir URI).")
    return ensure_tensorboard(manager, project, job_service_name(job_id), logdir, f"projects/{project}/jobs/{job_id}")
