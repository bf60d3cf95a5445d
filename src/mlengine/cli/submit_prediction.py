"""``mle jobs submit prediction``: a batch prediction job, with gcloud's flag names."""

from __future__ import annotations

import time
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import GcloudChoice, client, parse_key_values, parse_list, project_of, project_option
from mlengine.cli.streaming import require_success, stream_logs
from mlengine.core.names import JOB_ID_RE, validate_labels

#: gcloud's spellings (any case, ``-`` or ``_``: ``tf-record``, ``TF_RECORD``); values are the API's.
INPUT_FORMATS = ("JSON", "JSONL", "TEXT", "CSV", "TF_RECORD", "TF_RECORD_GZIP", "PARQUET")
OUTPUT_FORMATS = ("JSON", "CSV", "PARQUET")


def progress_text(job: dict[str, Any], started: float, now: float) -> str | None:
    """``instances done / total, rate`` of a running batch prediction job (None otherwise)."""
    state = job.get("state")
    if state != "RUNNING":
        return {"QUEUED": "Job is queued.", "PREPARING": "Job is being prepared (model, input shards)...",
                "CANCELLING": "Job is being cancelled..."}.get(str(state))
    out = job.get("predictionOutput") or {}
    done = sum(int(out.get(k) or 0) for k in ("predictionCount", "errorCount", "pendingCount"))
    total = int(out.get("instanceCount") or 0)
    rate = done / max(now - started, 1e-6)
    width = 30
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    errors = int(out.get("errorCount") or 0)
    return f"[{bar}] {done}/{total or '?'} instances, {rate:,.0f}/s" + (f", {errors} errors" if errors else "")


def follow(c: Any, project: str, job_id: str) -> dict[str, Any]:
    """Print the job's logs with a progress line until it ends; return the Job."""
    started = time.monotonic()
    return stream_logs(c, project, job_id, progress_text=lambda job: progress_text(job, started, time.monotonic()))


@click.command("prediction")
@click.argument("job")
@project_option
@click.option("--model-dir", default=None, metavar="URI", help="A model directory (framework detected).")
@click.option("--model", default=None, help="A model of the project: its default version, or --version.")
@click.option("--version", default=None, help="A version of --model.")
@click.option("--input-paths", required=True, metavar="PATH,...",
              help="Input files, comma-separated; a trailing * matches several.")
@click.option("--output-path", required=True, metavar="URI", help="An empty (or new) output directory.")
@click.option("--data-format", required=True, type=GcloudChoice(INPUT_FORMATS),
              help="Format of the input files.")
@click.option("--output-data-format", default=None, type=GcloudChoice(OUTPUT_FORMATS),
              help="Format of the results (default json).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Instances per model call (64).")
@click.option("--max-worker-count", type=click.IntRange(min=1), default=None, help="Most workers to use.")
@click.option("--signature-name", default=None, help="The SavedModel signature to call.")
@click.option("--key-field", default=None, help="Field of each (object) instance that is its key.")
@click.option("--runtime-version", default=None, help="runtimeVersion of the job (recorded).")
@click.option("--region", default=None, help="Region of the job (recorded).")
@click.option("--labels", default=None, metavar="KEY=VALUE,...", help="Labels of the job.")
@click.option("--stream-logs", is_flag=True, help="Wait for the job, printing its logs and progress; exit 1 "
              "unless it succeeds.")
def prediction(job: str, project: str | None, model_dir: str | None, model: str | None, version: str | None,
               input_paths: str, output_path: str, data_format: str, output_data_format: str | None,
               batch_size: int | None, max_worker_count: int | None, signature_name: str | None,
               key_field: str | None, runtime_version: str | None, region: str | None, labels: str | None,
               stream_logs: bool) -> None:
    """Submit batch prediction job JOB: score every instance of the input files.

    \b
    Examples:
      mle jobs submit prediction score1 --model-dir ./export --data-format json \\
          --input-paths 'data/part-*' --output-path /tmp/score1 --stream-logs
      mle jobs submit prediction score2 --model taxifare --version v1 --data-format csv \\
          --input-paths data/rides.csv --output-path /tmp/score2 --max-worker-count 2
    """
    if not JOB_ID_RE.match(job):
        raise click.BadParameter(f"{job!r} is not a valid job id", param_hint="'JOB'")
    if bool(model_dir) == bool(model):
        raise click.UsageError("Specify exactly one of --model-dir and --model.")
    if version and not model:
        raise click.UsageError("--version needs --model.")
    project_name = project_of(project)
    pi: dict[str, Any] = {"dataFormat": data_format,
                          "inputPaths": parse_list(input_paths), "outputPath": output_path}
    if model_dir:
        pi["uri"] = model_dir
    elif version:
        pi["versionName"] = f"projects/{project_name}/models/{model}/versions/{version}"
    else:
        pi["modelName"] = f"projects/{project_name}/models/{model}"
    optional = {"outputDataFormat": output_data_format,
                "batchSize": None if batch_size is None else str(batch_size),
                "maxWorkerCount": None if max_worker_count is None else str(max_worker_count),
                "signatureName": signature_name, "keyField": key_field, "runtimeVersion": runtime_version,
                "region": region}
    pi.update({k: v for k, v in optional.items() if v is not None})
    body: dict[str, Any] = {"jobId": job, "predictionInput": pi}
    job_labels = validate_labels(parse_key_values(labels, "--labels"))
    if job_labels:
        body["labels"] = job_labels
    c = client()
    c.create_job(project_name, body)
    output.status(f"Job [{job}] submitted successfully.")
    if not stream_logs:
        where = f" --project {project}" if project else ""
        output.status(f"Follow it with: mle jobs stream-logs {job}{where}")
        return
    final = follow(c, project_name, job)
    keys = ("jobId", "state", "startTime", "endTime", "predictionOutput")
    output.print_resource({k: final[k] for k in keys if k in final})
    require_success(final)

