"""A toy job kind defined only in the tests: "sleep N seconds, then exit with a code".

Loaded by a real server through ``MLE_JOB_KINDS=toy_kinds:SleepKind`` (this directory on
``PYTHONPATH``), and used directly by the scheduler's unit tests. Nothing in the scheduler
knows it exists.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from mlengine.core.names import validate_job_id, validate_labels
from mlengine.errors import invalid
from mlengine.jobs.executors import Placement, ReplicaRequest
from mlengine.jobs.kinds import JobKind, KindContext, ReplicaCommand, Submission
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.resources import Resources
from mlengine.store.models import JobRow


class SleepKind(JobKind):
    name: ClassVar[str] = "sleep"
    input_field: ClassVar[str] = "sleepInput"
    output_field: ClassVar[str] = "sleepOutput"

    def __init__(self, context: KindContext | None = None) -> None:
        self.context = context

    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        job_id = validate_job_id(body.get("jobId"))
        spec = body.get("sleepInput")
        if not isinstance(spec, Mapping):
            raise invalid("sleepInput", "must be an object")
        seconds = spec.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
            raise invalid("sleepInput.seconds", "must be a number of seconds between 0 and 3600")
        code = spec.get("exitCode", 0)
        if not isinstance(code, int) or isinstance(code, bool):
            raise invalid("sleepInput.exitCode", "must be an integer")
        return Submission(job_id, {"seconds": seconds, "exitCode": code}, validate_labels(body.get("labels")),
                          max_running_seconds=spec.get("maxRunningSeconds"),
                          max_wait_seconds=spec.get("maxWaitSeconds"), output={"slept": False},
                          max_retries=int(spec.get("maxRetries", 0)))

    def plan(self, job: JobRow) -> list[ReplicaRequest]:
        return [ReplicaRequest("sleeper", 0, Resources(0.5, 0, 0))]

    def prepare(self, job: JobRow, paths: JobPaths, log: Any) -> Any:
        log(f"Preparing to sleep {job.input['seconds']}s.")
        return sys.executable

    def command(self, job: JobRow, prepared: Any, placement: Placement, position: int,
                paths: JobPaths) -> ReplicaCommand:
        code = (f"import sys, time; print('sleeping', flush=True); time.sleep({job.input['seconds']!r}); "
                f"sys.exit({int(job.input['exitCode'])})")
        return ReplicaCommand([prepared, "-c", code], {"PYTHONUNBUFFERED": "1"})
