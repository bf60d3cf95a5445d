"""Job operations behind the REST API: create, get, list, cancel, patch labels, logs.

The service validates, stores and wakes the scheduler; it never runs user code and never
waits for a job. Rendering follows the ml v1 ``Job`` schema exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError, failed_precondition, invalid
from mlengine.store.filters import compile_filter
from mlengine.store.jobs import JobRepository, etag_of
from mlengine.store.models import JobRow
from mlengine.store.timeutil import rfc3339, utcnow
from mlengine.training import states
from mlengine.training.jobspec import validate_job, validate_labels
from mlengine.training.logs import read_logs
from mlengine.training.runtime import JobPaths


def render_job(row: JobRow, position: int = 0) -> dict[str, Any]:
    job: dict[str, Any] = {
        "jobId": row.job_id,
        "trainingInput": row.training_input,
        "createTime": rfc3339(row.create_time),
        "state": row.state,
        "trainingOutput": row.training_output or {},
        "labels": row.labels or {},
        "etag": etag_of(row),
    }
    if row.start_time:
        job["startTime"] = rfc3339(row.start_time)
    if row.end_time:
        job["endTime"] = rfc3339(row.end_time)
    if row.error_message:
        job["errorMessage"] = row.error_message
    if position:
        job["jobPosition"] = str(position)
    return job


class JobService:
    def __init__(self, settings: Settings, repo: JobRepository, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.repo = repo
        self.wake = wake

    def _check_uris(self, training_input: Mapping[str, Any]) -> None:
        from mlengine.storage import uris
        from mlengine.training.packaging import validate_package_archive

        for i, uri in enumerate(training_input["packageUris"]):
            field = f"trainingInput.packageUris[{i}]"
            uris.check_usable(uri, field)
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

    def _check_machine_types(self, training_input: Mapping[str, Any]) -> None:
        """Unknown machine types and bad acceleratorConfigs are refused, naming the field."""
        from mlengine.training.capacity import replica_demands
        from mlengine.training.machines import machine_table

        replica_demands(training_input, "machine", machine_table(self.settings.machine_types_path))

    def create(self, project: str, body: Any) -> dict[str, Any]:
        spec = validate_job(body)
        self._check_machine_types(spec.training_input)
        self._check_uris(spec.training_input)
        internal = {
            "maxRunningSeconds": spec.max_running_seconds,
            "maxWaitSeconds": spec.max_wait_seconds,
        }
        output: dict[str, Any] = {}
        if spec.training_input.get("hyperparameters") is not None:
            from mlengine.tuning.trials import admit

            tuning, output = admit(self.repo, project, spec.training_input)
            internal.update(tuning)
        row = self.repo.create(
            project, spec.job_id, state=states.QUEUED, training_input=spec.training_input,
            labels=spec.labels, internal=internal, training_output=output,
        )
        JobPaths.of(self.settings, project, spec.job_id).service_log(
            f"Validating job requirements... Job {spec.job_id} submitted."
        )
        self.wake()
        return render_job(row, self.repo.queue_position(row))

    def get(self, project: str, job_id: str) -> dict[str, Any]:
        row = self.repo.get(project, job_id)
        return render_job(row, self.repo.queue_position(row))

    def list(
        self, project: str, filter_text: str | None, page_size: int | None, page_token: str | None
    ) -> dict[str, Any]:
        predicate = compile_filter(filter_text)
        rows, next_token = self.repo.list_page(  # trials of tuning jobs are not listed
            project, lambda r: "parentJobPk" not in r.internal and predicate(render_job(r)),
            page_size, page_token,
        )
        result: dict[str, Any] = {"jobs": [render_job(r, self.repo.queue_position(r)) for r in rows]}
        if next_token:
            result["nextPageToken"] = next_token
        return result

    def cancel(self, project: str, job_id: str) -> dict[str, Any]:
        row = self.repo.get(project, job_id)

        def change(job: JobRow) -> None:
            if job.state in states.TERMINAL:
                raise failed_precondition(
                    f"Job projects/{project}/jobs/{job_id} is already in a terminal state: {job.state}"
                )
            if job.state == states.CANCELLING:
                return
            if job.state == states.QUEUED and not job.internal.get("tuning"):
                job.state = states.CANCELLED
                job.end_time = utcnow()
            else:
                job.state = states.CANCELLING
                job.internal = {**job.internal, "cancelRequestedAt": utcnow().timestamp()}

        self.repo.update(row.id, change)
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
            job.internal = {**job.internal, "labelsVersion": job.internal.get("labelsVersion", 0) + 1}

        updated = self.repo.update(row.id, change)
        return render_job(updated, self.repo.queue_position(updated))

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
