"""``mle jobs``: list, describe, stream-logs, cancel, update, IAM policies (and ``submit training``)."""

from __future__ import annotations

import itertools
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import (
    MleGroup,
    client,
    fail,
    parse_key_values,
    parse_list,
    project_of,
    project_option,
)
from mlengine.cli.iam import add_iam_commands, job_resource
from mlengine.cli.streaming import require_success, stream_logs
from mlengine.cli.submit import submit
from mlengine.errors import Code, MLEngineError

UPDATE_ATTEMPTS = 5
#: gcloud's table of ``jobs list`` (CREATED without fractions of a second).
JOBS_TABLE = "table(jobId, state:label=STATUS, createTime.date():label=CREATED)"


@click.group(cls=MleGroup)
def jobs() -> None:
    """Submit and manage training jobs on the mlengine server.

    \b
    Examples:
      mle jobs submit training my_job --package-path trainer --module-name trainer.task \\
          --job-dir /tmp/my_job -- --epochs 5
      mle jobs list --filter 'state=RUNNING'
      mle jobs describe my_job
      mle jobs stream-logs my_job
      mle jobs cancel my_job
      mle jobs add-iam-policy-binding my_job --member user:ann --role roles/ml.jobOwner
    """


jobs.add_command(submit)
add_iam_commands(jobs, "JOB", job_resource, "my_job", "training job JOB", "roles/ml.jobOwner")


@jobs.command("list")
@project_option
@click.option("--filter", "filter_", metavar="EXPRESSION", default=None,
              help="Server-side filter (AIP-160), e.g. 'state=RUNNING OR state=QUEUED', "
                   "'labels.team=ml', 'createTime>\"2026-01-01T00:00:00Z\"'.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show at most this many jobs.")
@click.option("--page-size", type=click.IntRange(min=1), default=None,
              help="Jobs per request to the server (all pages are read).")
def list_jobs(project: str | None, filter_: str | None, limit: int | None, page_size: int | None) -> None:
    """List training jobs (JOB_ID, STATUS, CREATED), newest first.

    \b
    Examples:
      mle jobs list
      mle jobs list --filter 'state=FAILED' --limit 10
      mle jobs list --filter 'labels.owner=ann' --format json
      mle jobs list --format 'value(jobId)'
      mle jobs list --format 'csv(jobId,state,trainingInput.scaleTier)'
    """
    found = list(itertools.islice(
        client().list_jobs(project_of(project), filter=filter_, page_size=page_size), limit
    ))
    output.print_list(found, JOBS_TABLE)


@jobs.command()
@click.argument("job")
@project_option
@click.option("--summarize", is_flag=True,
              help="Tables instead of the whole resource; a tuning job's trials best first.")
def describe(job: str, project: str | None, summarize: bool) -> None:
    """Show everything about training job JOB.

    \b
    Examples:
      mle jobs describe my_job
      mle jobs describe my_job --format json
      mle jobs describe my_job --format 'value(state)'
      mle jobs describe my_tuning_job --summarize
    """
    found = client().get_job(project_of(project), job)
    if summarize:
        from mlengine.cli.summary import summarize as summary

        click.echo(summary(found))
        return
    output.print_resource(found)


@jobs.command("stream-logs")
@click.argument("job")
@project_option
@click.option("--task-name", default=None, metavar="TASK",
              help="Only this task's logs, e.g. master-replica-0, worker-replica-1, service.")
@click.option("--polling-interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between polls for new log entries.")
def stream_logs_command(
    job: str, project: str | None, task_name: str | None, polling_interval: float
) -> None:
    """Print the logs of JOB (TIMESTAMP SEVERITY TASK message) until it ends.

    Exits 0 when the job ends SUCCEEDED, 1 when it ends FAILED or CANCELLED. Ctrl-C stops
    following; the job keeps running.

    \b
    Examples:
      mle jobs stream-logs my_job
      mle jobs stream-logs my_job --task-name worker-replica-0
    """
    final = stream_logs(client(), project_of(project), job, task_name=task_name,
                        interval=polling_interval)
    require_success(final)


@jobs.command()
@click.argument("job")
@project_option
def cancel(job: str, project: str | None) -> None:
    """Cancel training job JOB (its replicas get SIGTERM, then SIGKILL after a grace period).

    \b
    Examples:
      mle jobs cancel my_job
    """
    client().cancel_job(project_of(project), job)
    output.status(f"Cancelled job [{job}].")


def updated_labels(
    current: dict[str, str], update: dict[str, str], remove: list[str], clear: bool
) -> dict[str, str]:
    """gcloud's order: clear, then remove, then update."""
    labels = {} if clear else dict(current)
    for key in remove:
        labels.pop(key, None)
    labels.update(update)
    return labels


@jobs.command()
@click.argument("job")
@project_option
@click.option("--update-labels", metavar="KEY=VALUE,...", default=None,
              help="Labels to add or change.")
@click.option("--remove-labels", metavar="KEY,...", default=None, help="Labels to remove.")
@click.option("--clear-labels", is_flag=True, help="Remove all labels (before --update-labels).")
def update(
    job: str, project: str | None, update_labels: str | None, remove_labels: str | None,
    clear_labels: bool,
) -> None:
    """Update the labels of training job JOB.

    Reads the job, changes its labels and writes them back guarded by the job's etag, so a
    concurrent change is never overwritten (the update is retried on a conflict).

    \b
    Examples:
      mle jobs update my_job --update-labels team=ml,owner=ann
      mle jobs update my_job --remove-labels owner
      mle jobs update my_job --clear-labels --update-labels team=research
    """
    changes = parse_key_values(update_labels, "--update-labels")
    remove = parse_list(remove_labels)
    if not (changes or remove or clear_labels):
        raise click.UsageError(
            "Specify at least one of --update-labels, --remove-labels or --clear-labels."
        )
    c = client()
    name = project_of(project)
    for attempt in range(UPDATE_ATTEMPTS):
        current: dict[str, Any] = c.get_job(name, job)
        labels = updated_labels(dict(current.get("labels") or {}), changes, remove, clear_labels)
        if labels == (current.get("labels") or {}):
            output.status(f"No change to the labels of job [{job}].")
            return
        try:
            c.patch_job_labels(name, job, labels, etag=current.get("etag"))
        except MLEngineError as err:
            if err.code is Code.ABORTED and attempt + 1 < UPDATE_ATTEMPTS:
                continue
            raise
        output.status(f"Updated job [{job}].")
        return
    raise fail(f"Job [{job}] kept changing; its labels were not updated.")
