"""Following a job: its log entries as they are written, and its state until it ends.

:func:`follow_job` polls ``GET .../jobs/{j}`` and ``GET .../jobs/{j}/logs`` with the cursor
the server returned last time, so each entry is delivered exactly once. The job's state is
read *before* its logs, so once a terminal state is seen, the logs read next are complete.
Short server outages (a restart) are ridden out: the job keeps running without the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlengine.errors import Code, MLEngineError
from mlengine.jobs.lifecycle import TERMINAL

LOG_PAGE_SIZE = 1000


def follow_job(
    client: Any,
    project: str,
    job_id: str,
    *,
    on_entries: Callable[[list[dict[str, Any]]], None],
    on_job: Callable[[dict[str, Any]], None] | None = None,
    on_outage: Callable[[MLEngineError], None] | None = None,
    task_name: str | None = None,
    interval: float = 1.0,
    outage_limit: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Deliver log entries until the job is terminal; return the final Job."""
    token: str | None = None
    down_since: float | None = None
    while True:
        try:
            job = client.get_job(project, job_id)
            if on_job is not None:
                on_job(job)
            while True:
                entries, token = client.read_logs(
                    project, job_id, task_name=task_name, page_token=token, page_size=LOG_PAGE_SIZE
                )
                if entries:
                    on_entries(entries)
                if len(entries) < LOG_PAGE_SIZE:
                    break
            down_since = None
        except MLEngineError as err:
            if err.code is not Code.UNAVAILABLE:
                raise
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since > outage_limit:
                raise
            if on_outage is not None:
                on_outage(err)
            sleep(max(interval, 2.0))
            continue
        if job.get("state") in TERMINAL:
            return dict(job)
        sleep(interval)
