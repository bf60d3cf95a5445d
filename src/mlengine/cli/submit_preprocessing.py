"""``mle jobs submit preprocessing``: an Apache Beam pipeline package run as a server job."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import client, fail, parse_key_values, parse_list, project_of, project_option
from mlengine.cli.packages import job_exists, local_package, stage_all
from mlengine.cli.streaming import require_success
from mlengine.cli.streaming import stream_logs as follow_logs
from mlengine.core.names import JOB_ID_RE, validate_labels

RUNNERS = {"direct": "DirectRunner", "directrunner": "DirectRunner", "dask": "DaskRunner", "daskrunner": "DaskRunner"}


@click.command("preprocessing")
@click.argument("job")
@click.argument("user_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- USER_ARGS...]")
@project_option
@click.option("--package-path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local directory of the pipeline's Python package; built and staged.")
@click.option("--packages", default=None, metavar="PACKAGE,...", help="Built packages (local or URIs).")
@click.option("--module-name", required=True, help="Module to run, e.g. trainer.preprocess.")
@click.option("--job-dir", default=None, metavar="URI", help="Where the pipeline writes (--job-dir).")
@click.option("--staging-bucket", default=None, metavar="URI", help="Where local packages are staged.")
@click.option("--runner", default="direct", type=click.Choice(sorted(RUNNERS), case_sensitive=False),
              help="direct (this machine, --worker-count processes) or dask (Beam's DaskRunner).")
@click.option("--worker-count", type=click.IntRange(min=1, max=64), default=None,
              help="DirectRunner processes, or Dask workers of the job's own cluster (default 2).")
@click.option("--direct-running-mode", default=None,
              type=click.Choice(["multi_processing", "multi_threading", "in_memory"]),
              help="How the DirectRunner runs bundles (default multi_processing).")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="An existing Dask scheduler to run on (DaskRunner) instead of the job's own workers.")
@click.option("--region", default=None, help="Region of the job (recorded).")
@click.option("--labels", default=None, metavar="KEY=VALUE,...", help="Labels of the job.")
@click.option("--stream-logs", is_flag=True, help="Wait for the job, printing its logs; exit 1 unless it succeeds.")
def preprocessing(job: str, user_args: tuple[str, ...], project: str | None, package_path: str | None,
                  packages: str | None, module_name: str, job_dir: str | None, staging_bucket: str | None,
                  runner: str, worker_count: int | None, direct_running_mode: str | None,
                  dask_address: str | None, region: str | None, labels: str | None, stream_logs: bool) -> None:
    """Submit preprocessing job JOB: a Beam pipeline run as `python -m MODULE USER_ARGS`.

    The server adds the runner's pipeline options and `--job-dir JOB_DIR`.

    \b
    Examples:
      mle jobs submit preprocessing taxi_prep --package-path trainer \\
          --module-name trainer.preprocess --job-dir /data/taxi_prep -- --nbuckets 10
      mle jobs submit preprocessing taxi_prep_dask --package-path trainer \\
          --module-name trainer.preprocess --job-dir /data/prep2 --runner dask --worker-count 2
    """
    from mlengine.client.staging import absolute_uri

    if not JOB_ID_RE.match(job):
        raise click.BadParameter(f"{job!r} is not a valid job id", param_hint="'JOB'")
    if not package_path and not packages:
        raise click.UsageError("Specify --package-path or --packages.")
    if package_path and not (Path(package_path) / "__init__.py").is_file():
        raise click.BadParameter(f"{package_path} is not a Python package: it has no __init__.py",
                                 param_hint="'--package-path'")
    pi: dict[str, Any] = {"pythonModule": module_name, "runner": RUNNERS[runner.lower()]}
    optional = {"jobDir": absolute_uri(job_dir) if job_dir else None, "region": region,
                "workerCount": None if worker_count is None else str(worker_count),
                "directRunningMode": direct_running_mode, "daskAddress": dask_address,
                "args": list(user_args) or None}
    pi.update({k: v for k, v in optional.items() if v is not None})
    job_labels = validate_labels(parse_key_values(labels, "--labels"))
    resolved = [(uri, local_package(uri, "'--packages'")) for uri in parse_list(packages)]
    project_name = project_of(project)
    c = client()
    server_info = c.server_info()
    if job_exists(c, project_name, job):
        raise fail(f"Job projects/{project_name}/jobs/{job} already exists.")
    with tempfile.TemporaryDirectory(prefix="mle-submit-") as tmp:
        files: list[tuple[str, Path | None]] = []
        if package_path:
            from mlengine.core.packaging import build_sdist

            with output.spinner("Building package..."):
                built = build_sdist(Path(package_path).absolute(), Path(tmp), log=None)
            files.append((built.name, built))
        files += resolved
        pi["packageUris"] = stage_all(c, project_name, job, files, staging_bucket, pi.get("jobDir"), server_info)
        body: dict[str, Any] = {"jobId": job, "preprocessingInput": pi}
        if job_labels:
            body["labels"] = job_labels
        created = c.create_job(project_name, body)
    output.status(f"Job [{job}] submitted successfully.")
    if stream_logs:
        final = follow_logs(c, project_name, job)
        keys = ("jobId", "state", "startTime", "endTime", "preprocessingOutput")
        output.print_resource({k: final[k] for k in keys if k in final})
        require_success(final)
        return
    where = f" --project {project}" if project else ""
    output.status(f"Follow it with: mle jobs stream-logs {job}{where}")
    output.print_resource({"jobId": created.get("jobId", job), "state": created.get("state")})
