"""Job operations behind the REST API: create, get, list, cancel, patch labels, logs.

The service validates, stores and wakes the scheduler; it never runs user code and never
waits for a job. Rendering follows the ml v1 ``Job`` schema exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlengine.config import Settings
from mlengine.core import iam
from mlengine.core.names import validate_labels
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, failed_precondition, invalid
from mlengine.jobs import lifecycle as states
from mlengine.jobs.cancellation import request_cancel
from mlengine.jobs.identity import initial_bindings
from mlengine.jobs.kinds import KindRegistry
from mlengine.jobs.logs import read_logs
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.scheduling import SchedulingState
from mlengine.store.filters import evaluate
from mlengine.store.iam import PolicyStore
from mlengine.store.jobs import JobRepository, compile_job_filter, etag_of
from mlengine.store.models import JobRow

#: Fields of the ml v1 ``Job`` resource besides the kinds' input and output fields, plus
#: mlengine's output-only extensions (``attempt``, ``warnings``), so that a described job can be
#: posted again as a new one (output-only fields are ignored on create, as AI Platform does).
JOB_FIELDS = frozenset({"jobId", "state", "createTime", "startTime", "endTime", "errorMessage", "labels",
                        "etag", "jobPosition", "attempt", "warnings"})


def render_job(row: JobRow, kinds: KindRegistry, position: int = 0) -> dict[str, Any]:
    kind = kinds.get(row.kind)
    job: dict[str, Any] = {"jobId": row.job_id}
    if kind is not None:
        job.update(kind.render(row))
    job.update({
        "createTime": rfc3339(row.create_time),
        "state": row.state,
        "labels": row.labels or {},
        "etag": etag_of(row),
    })
    if row.start_time:
        job["startTime"] = rfc3339(row.start_time)
    if row.end_time:
        job["endTime"] = rfc3339(row.end_time)
    if row.error_message:
        job["errorMessage"] = row.error_message
    if position:
        job["jobPosition"] = str(position)
    attempt = (row.scheduling or {}).get("attempt")
    if attempt:  # mlengine: the attempt running (or that ran last) of a job with maxRetries
        job["attempt"] = attempt
    return job


class JobService:
    def __init__(self, settings: Settings, repo: JobRepository, kinds: KindRegistry, wake: Callable[[], None],
                 policies: PolicyStore | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.kinds = kinds
        self.wake = wake
        self.policies = policies

    def _render(self, row: JobRow, position: int = 0) -> dict[str, Any]:
        return render_job(row, self.kinds, position)

    def create(self, project: str, body: Any, creator: str | None = None) -> dict[str, Any]:
        """Validate and queue a job. ``creator`` (an IAM member) gets roles/ml.jobOwner on it and
        the account it runs as roles/ml.viewer (:mod:`mlengine.jobs.identity`); whoever calls
        this has checked the caller may act as a ``serviceAccount`` the body names."""
        if not isinstance(body, Mapping):
            raise invalid("job", "the request body must be a JSON object (a Job)")
        known = JOB_FIELDS | self.kinds.fields() | {"predictionInput", "predictionOutput"}
        for key in body:
            if key not in known:
                raise invalid(key, f"unknown field {key!r} in Job")
        kind = self.kinds.for_body(body)
        sub = kind.validate(project, body)
        scheduling = SchedulingState(max_running_seconds=sub.max_running_seconds,
                                     max_wait_seconds=sub.max_wait_seconds,
                                     max_retries=sub.max_retries or None, attempt=1 if sub.max_retries else None)
        row = self.repo.create(
            project, sub.job_id, kind=kind.name, state=states.QUEUED, input=sub.input, labels=sub.labels,
            scheduling=scheduling.to_json(), kind_state=sub.kind_state, output=sub.output,
        )
        if self.policies is not None:  # before the scheduler may launch it (its token's rights)
            self.policies.set(iam.job_resource(project, sub.job_id), initial_bindings(row, creator))
        JobPaths.of(self.settings, project, sub.job_id).service_log(
            f"Validating job requirements... Job {sub.job_id} submitted."
        )
        self.wake()
        return self._render(row, self.repo.queue_position(row))

    def get(self, project: str, job_id: str) -> dict[str, Any]:
        row = self.repo.get(project, job_id)
        return self._render(row, self.repo.queue_position(row))

    def list(
        self, project: str, filter_text: str | None, page_size: int | None, page_token: str | None
    ) -> dict[str, Any]:
        where = compile_job_filter(filter_text)  # state, labels, createTime, jobId: SQL
        node = where.node
        predicate = (lambda r: evaluate(node, self._render(r))) if where.needs_python and node is not None else None
        rows, next_token = self.repo.list_page(  # trials of tuning jobs are not listed
            project, predicate, page_size, page_token, where=where,
            exclude_kinds=[k.name for k in self.kinds if not k.listed],
        )
        result: dict[str, Any] = {"jobs": [self._render(r, self.repo.queue_position(r)) for r in rows]}
        if next_token:
            result["nextPageToken"] = next_token
        return result

    def cancel(self, project: str, job_id: str) -> dict[str, Any]:
        row = self.repo.get(project, job_id)
        kind = self.kinds.get(row.kind)
        updated = request_cancel(self.repo, row, None, controller=bool(kind and kind.controller))
        if updated is None:  # AI Platform's answer (400 FAILED_PRECONDITION), whatever the end state
            raise failed_precondition("Cannot cancel an already completed job.")
        JobPaths.of(self.settings, project, job_id).service_log("Job cancel requested.")
        self.wake()
        return {}

    def patch(
        self, project: str, job_id: str, body: Any, update_mask: str | None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise invalid("job", "the request body must be a JSON object (a Job)")
        mask = [m.strip() for m in (update_mask or "").split(",") if m.strip()]
        if not mask:
            raise invalid("updateMask", "is required; only 'labels' can be updated")
        for path in mask:
            if path != "labels":
                raise invalid("updateMask", f"{path!r} cannot be updated; only 'labels' can")
        labels = validate_labels(body.get("labels"))
        row = self.repo.get(project, job_id)
        etag = body.get("etag")

        def change(job: JobRow) -> None:
            if etag and etag != etag_of(job):
                raise MLEngineError(
                    Code.ABORTED,
                    f"The etag {etag!r} does not match the job's current etag: it was changed "
                    "concurrently; read it again and retry",
                )
            job.labels = labels
            job.labels_version = (job.labels_version or 0) + 1

        updated = self.repo.update(row.id, change)
        return self._render(updated, self.repo.queue_position(updated))

    def logs(
        self, project: str, job_id: str, task_name: str | None, page_token: str | None,
        page_size: int | None,
    ) -> dict[str, Any]:
        self.repo.get(project, job_id)
        paths = JobPaths.of(self.settings, project, job_id)
        # A tuning job's trials keep their logs under <job>/trials/<trialId>/logs: shown as
        # tasks "trial-<trialId>/<task>" (taskName also selects one trial, or a task of all).
        trials = {f"trial-{d.parent.name}": d for d in sorted((paths.root / "trials").glob("*/logs"))}
        entries, token = read_logs(paths.logs_dir, task_name, page_token, page_size, trials)
        return {"entries": entries, "nextPageToken": token}
