"""A Beam runner that runs a pipeline built in a notebook (or any script) as an mlengine
preprocessing job: the pipeline option that names mlengine.

    options = PipelineOptions(["--runner=mlengine.client.beam.MLEngineRunner",
                               "--mle_job_id=prep1", "--mle_job_dir=/data/prep1",
                               "--mle_runner=DaskRunner", "--mle_worker_count=2"])
    with beam.Pipeline(options=options) as p:
        p | beam.Create(rows) | beam.Map(clean) | ...

``run_pipeline`` serializes the pipeline (Beam's runner API proto, the notebook's functions
pickled by value in it) to ``<mle_job_dir>/pipeline/pipeline.pb``, submits a job with
``preprocessingInput.pipelineUri`` and returns a result whose ``wait_until_finish`` follows the
job. The job directory must be a path the server can read (a notebook of the server's machine:
``mle notebooks``). The notebook's Beam must be the job environment's (``mlengine[beam]``:
apache-beam 2.77) and its Python the server's, since the functions travel pickled.

Imports Apache Beam at import time: import this module only where Beam is installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from mlengine.errors import Code, MLEngineError

_STATES = {"SUCCEEDED": PipelineState.DONE, "FAILED": PipelineState.FAILED, "CANCELLED": PipelineState.CANCELLED,
           "CANCELLING": PipelineState.CANCELLING, "RUNNING": PipelineState.RUNNING}


class MLEngineOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--mle_job_id", default=None, help="Job id (default: beam_<timestamp>).")
        parser.add_argument("--mle_job_dir", default=None, help="Where the job writes; the pipeline is saved there.")
        parser.add_argument("--mle_project", default=None, help="Project (default: the connection's).")
        parser.add_argument("--mle_runner", default="DirectRunner", choices=("DirectRunner", "DaskRunner"))
        parser.add_argument("--mle_worker_count", default=None, type=int)
        parser.add_argument("--mle_dask_address", default=None)


class MLEngineResult(PipelineResult):
    def __init__(self, client: Any, project: str, job_id: str) -> None:
        super().__init__(PipelineState.PENDING)
        self.client, self.project, self.job_id = client, project, job_id

    @property
    def state(self) -> Any:
        job = self.client.get_job(self.project, self.job_id)
        self._state = _STATES.get(job.get("state"), PipelineState.PENDING)
        return self._state

    def wait_until_finish(self, duration: int | None = None) -> Any:
        deadline = None if duration is None else time.monotonic() + duration / 1000.0
        while True:
            job = self.client.get_job(self.project, self.job_id)
            state = job.get("state")
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                self._state = _STATES[state]
                if state != "SUCCEEDED":
                    raise MLEngineError(Code.FAILED_PRECONDITION, f"Job {self.job_id} {state}: "
                                        f"{job.get('errorMessage', '')}")
                return self._state
            if deadline is not None and time.monotonic() > deadline:
                return self.state
            time.sleep(1.0)

    def cancel(self) -> Any:
        self.client.cancel_job(self.project, self.job_id)
        return self.state


class MLEngineRunner(PipelineRunner):
    """Runs the pipeline as an mlengine preprocessing job (see the module docstring)."""

    def run_pipeline(self, pipeline: Any, options: PipelineOptions) -> MLEngineResult:
        from mlengine.client.http import Client

        mle = options.view_as(MLEngineOptions)
        if not mle.mle_job_dir:
            raise ValueError("--mle_job_dir is required: a directory the server can read and the job writes")
        job_id = mle.mle_job_id or time.strftime("beam_%Y%m%d_%H%M%S")
        job_dir = Path(mle.mle_job_dir).absolute()
        saved = job_dir / "pipeline" / "pipeline.pb"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(pipeline.to_runner_api().SerializeToString())
        from mlengine.config import load_settings

        settings = load_settings()
        client = Client.from_settings(settings)
        project = mle.mle_project or settings.project
        pi: dict[str, Any] = {"pipelineUri": str(saved), "jobDir": str(job_dir), "runner": mle.mle_runner}
        if mle.mle_worker_count:
            pi["workerCount"] = str(mle.mle_worker_count)
        if mle.mle_dask_address:
            pi["daskAddress"] = mle.mle_dask_address
        client.create_job(project, {"jobId": job_id, "preprocessingInput": pi})
        print(f"Submitted preprocessing job {project}/{job_id} ({mle.mle_runner})", flush=True)
        return MLEngineResult(client, project, job_id)
