"""``trainingInput.enableWebAccess``: a training job's TensorBoard, started with the job.

AI Platform answers ``enableWebAccess`` with interactive shells; mlengine answers it with the
job's TensorBoard (the tensorboard service ``tb-<jobId>`` over its ``jobDir``), created with
the job and named in ``trainingOutput.webAccessUris`` under the key ``tensorboard``: the
server's URL as the client called it, plus the service's proxy path. The service stops when
idle and starts again when the URL is opened. A job asking for it needs a ``jobDir`` (400
naming ``trainingInput.enableWebAccess`` otherwise). Tuning jobs get the TensorBoard too (their
trials write below the jobDir); their ``trainingOutput`` belongs to the tuner, so the URL is
the same path but only ``mle tensorboard JOB`` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlengine.errors import invalid
from mlengine.services import proxy_prefix
from mlengine.services.kinds.tensorboard import ensure_job_tensorboard, job_logdir

KEY = "tensorboard"


def wanted(body: Any) -> bool:
    """Whether a create body asks for web access; 400 if it does without a ``jobDir``."""
    section = body.get("trainingInput") if isinstance(body, Mapping) else None
    if not isinstance(section, Mapping) or section.get("enableWebAccess") is not True:
        return False
    if job_logdir(section) is None:
        raise invalid("trainingInput.enableWebAccess", "needs trainingInput.jobDir: the job's TensorBoard shows it")
    return True


def start(state: Any, base_url: str, project: str, job: dict[str, Any]) -> dict[str, Any]:
    """Start the TensorBoard of a created job and record its URL; the job as it renders now."""
    manager = getattr(state, "services", None)
    if manager is None:
        return job
    service = ensure_job_tensorboard(manager, project, job["jobId"], job.get("trainingInput"))
    if "trainingOutput" not in job or "hyperparameters" in (job.get("trainingInput") or {}):
        return job
    url = base_url.rstrip("/") + proxy_prefix(project, service.name)
    jobs = state.jobs
    row = jobs.repo.get(project, job["jobId"])
    jobs.repo.update(row.id, lambda r: setattr(r, "output", {**(r.output or {}), "webAccessUris": {KEY: url}}))
    rendered: dict[str, Any] = jobs.get(project, job["jobId"])
    return rendered
