"""``mle local``: run a trainer package on this machine, without a server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, bool_value_option, fail


@click.group(cls=MleGroup)
def local() -> None:
    """Run trainer packages on this machine, exactly as a job would run them.

    \b
    Examples:
      mle local train --package-path trainer --module-name trainer.task -- --epochs 1
    """


@local.command()
@click.argument("user_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- USER_ARGS...]")
@click.option("--package-path", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of the trainer package (e.g. trainer/); its parent is the "
                   "working directory.")
@click.option("--module-name", required=True, help="Module to run, e.g. trainer.task.")
@click.option("--job-dir", default=None, metavar="DIR",
              help="Passed to the trainer as --job-dir DIR (local paths are made absolute).")
@click.option("--distributed", is_flag=True,
              help="Run master, workers and parameter servers as separate processes.")
@click.option("--worker-count", type=click.IntRange(min=0), default=None,
              help="Workers with --distributed (default 2).")
@click.option("--parameter-server-count", type=click.IntRange(min=0), default=None,
              help="Parameter servers with --distributed (default 2).")
@click.option("--evaluator-count", type=click.IntRange(min=0), default=None,
              help="Evaluators with --distributed (default 0).")
@click.option("--start-port", type=click.IntRange(1, 65535), default=27182, show_default=True,
              help="First of the consecutive ports of the cluster (with --distributed).")
@bool_value_option("--use-chief-in-tf-config",
                   "Name the first task 'chief' instead of 'master' in TF_CONFIG (bare flag or =true|false).")
def train(
    user_args: tuple[str, ...], package_path: str, module_name: str, job_dir: str | None,
    distributed: bool, worker_count: int | None, parameter_server_count: int | None,
    evaluator_count: int | None, start_port: int, use_chief_in_tf_config: bool | None,
) -> None:
    """Run a trainer package locally: `python -m MODULE USER_ARGS [--job-dir DIR]`.

    `python` is the one found on PATH (your environment, with its frameworks), as gcloud runs
    it; without one on PATH, mlengine's own interpreter runs the trainer.

    The working directory is the parent of --package-path; the trainer sees the same
    environment as on the server (TF_CONFIG, CLUSTER_SPEC, CLOUD_ML_JOB_ID=local,
    CLOUD_ML_HP_METRIC_FILE...). With --distributed, each task's output lines are prefixed with
    its name (e.g. [worker-replica-0]); the run succeeds when the master succeeds and fails as
    soon as any task fails. Ctrl-C stops every task.

    \b
    Examples:
      mle local train --package-path trainer --module-name trainer.task -- --epochs 1
      mle local train --package-path trainer --module-name trainer.task \\
          --job-dir /tmp/out --distributed --worker-count 2 --parameter-server-count 1
      mle local train --package-path trainer --module-name trainer.task \\
          --distributed --use-chief-in-tf-config=true
    """
    from mlengine.cli.local_runner import LocalTrain, TaskFailed, plan, user_python
    from mlengine.client.staging import absolute_uri

    if not distributed and any(v for v in (worker_count, parameter_server_count, evaluator_count)):
        output.status("WARNING: --worker-count, --parameter-server-count and --evaluator-count "
                      "are ignored without --distributed.")
    try:
        replicas = plan(
            distributed=distributed,
            workers=2 if worker_count is None else worker_count,
            parameter_servers=2 if parameter_server_count is None else parameter_server_count,
            evaluators=evaluator_count or 0, start_port=start_port,
            use_chief=bool(use_chief_in_tf_config),
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--start-port'") from None
    python, on_path = user_python()
    if not on_path:
        output.status(f"No `python` on PATH: running the trainer with {python}.")
    with tempfile.TemporaryDirectory(prefix="mle-local-train-") as tmp:
        run = LocalTrain(
            package_path=Path(package_path), module=module_name, user_args=user_args,
            job_dir=absolute_uri(job_dir) if job_dir else None, replicas=replicas,
            metric_file=Path(tmp) / "hypertune" / "output.metrics", distributed=distributed, python=python,
        )
        try:
            run.run()
        except TaskFailed as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            output.status("Interrupted: stopped every task.")
            raise SystemExit(130) from None
