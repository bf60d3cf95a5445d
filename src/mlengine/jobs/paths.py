"""Where a job's runtime files live under ``MLE_HOME/jobs/<project>/<jobId>/``.

``logs/<taskName>.jsonl``   one JSON line per log entry (``service`` is the engine's own log)
``replicas/<taskName>/``    the replica's exit status, its working directory ``work/`` and its
                            private ``home/`` and ``tmp/`` (``HOME``, ``TMPDIR``)
``hypertune/``              ``CLOUD_ML_HP_METRIC_FILE`` of the job
``packages/``               packages fetched from remote URIs
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from mlengine.config import Settings

_service_lock = threading.Lock()
log = logging.getLogger("mlengine.jobs")


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @classmethod
    def of(cls, settings: Settings, project: str, job_id: str) -> JobPaths:
        return cls(settings.jobs_dir / project / job_id)

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def log_file(self, task_name: str) -> Path:
        return self.logs_dir / f"{task_name}.jsonl"

    def replica_dir(self, task_name: str) -> Path:
        return self.root / "replicas" / task_name

    def workdir(self, task_name: str) -> Path:
        return self.replica_dir(task_name) / "work"

    def home_dir(self, task_name: str) -> Path:
        """The replica's ``HOME``."""
        return self.replica_dir(task_name) / "home"

    def tmp_dir(self, task_name: str) -> Path:
        """The replica's ``TMPDIR``."""
        return self.replica_dir(task_name) / "tmp"

    def status_file(self, task_name: str, attempt: int = 1) -> Path:
        """Where the replica's exit status lands; a retried job's later attempts get their own
        (an earlier attempt's replica may still be writing its own while it is stopped)."""
        name = "status.json" if attempt <= 1 else f"status-{attempt}.json"
        return self.replica_dir(task_name) / name

    @property
    def metric_file(self) -> Path:
        return self.root / "hypertune" / "output.metrics"

    @property
    def packages_dir(self) -> Path:
        return self.root / "packages"

    def service_log(self, message: str, severity: str = "INFO") -> None:
        """Append an entry to the engine's own log of this job (task name ``service``).

        Best effort: a log that cannot be written (a full disk, a path the OS refuses) is
        reported in the server's log and never stops the caller (the scheduler's pass)."""
        record = {
            "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "severity": severity,
            "taskName": "service",
            "message": message,
        }
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            with _service_lock, open(self.log_file("service"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except (OSError, ValueError) as exc:
            log.warning("cannot write the service log of %s: %s (%s)", self.root, exc, message)
