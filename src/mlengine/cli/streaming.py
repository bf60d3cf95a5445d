"""Printing a job's logs while it runs (``jobs stream-logs``, ``submit --stream-logs``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import fail
from mlengine.client.follow import follow_job
from mlengine.errors import MLEngineError


def _progress_text(job: dict[str, Any]) -> str | None:
    state = job.get("state")
    if state == "QUEUED":
        position = job.get("jobPosition")
        return f"Job is queued (position {position})." if position else "Job is queued."
    if state == "PREPARING":
        return "Job is being prepared (installing packages)..."
    if state == "CANCELLING":
        return "Job is being cancelled..."
    return None


def stream_logs(
    c: Any, project: str, job_id: str, *, task_name: str | None = None, interval: float = 1.0,
    progress_text: Callable[[dict[str, Any]], str | None] = _progress_text,
) -> dict[str, Any]:
    """Print ``TIMESTAMP SEVERITY TASK message`` lines until the job ends; return the Job.
    ``progress_text`` is the status line for the job as last read (None: no line).

    Ctrl-C stops following (the job keeps running) and exits 130.
    """
    progress = output.Progress()

    def on_job(job: dict[str, Any]) -> None:
        text = progress_text(job)
        if text:
            progress.update(text)
        else:
            progress.stop()

    def on_entries(entries: list[dict[str, Any]]) -> None:
        progress.pause()
        for entry in entries:
            click.echo(output.format_entry(entry))
        progress.resume()

    def on_outage(err: MLEngineError) -> None:
        progress.update("Lost contact with the mlengine server; retrying...")

    try:
        return follow_job(
            c, project, job_id, on_entries=on_entries, on_job=on_job, on_outage=on_outage,
            task_name=task_name, interval=interval,
        )
    except KeyboardInterrupt:
        progress.stop()
        output.status(f"Stopped streaming logs; job [{job_id}] keeps running.")
        raise SystemExit(130) from None
    finally:
        progress.stop()


def require_success(job: dict[str, Any]) -> None:
    """Fail the command unless the job ended SUCCEEDED."""
    state = job.get("state")
    if state == "SUCCEEDED":
        return
    message = f"Job [{job.get('jobId')}] ended in state {state}"
    detail = str(job.get("errorMessage") or "").strip()
    raise fail(f"{message}: {detail}" if detail else f"{message}.")
