"""Typed settings: every ``MLE_*`` environment variable is declared once, here.

Settings are read when :func:`load_settings` is called (never at import time) so tests and
subprocesses can point ``MLE_HOME`` elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _default_home() -> str:
    return str(Path("~/.mlengine").expanduser())


@dataclass(frozen=True)
class Setting:
    env: str
    help: str


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process (server, CLI or executor)."""

    home: Path = field(metadata={"env": "MLE_HOME", "help": "State directory (default ~/.mlengine)."})
    api_url: str | None = field(
        default=None,
        metadata={"env": "MLE_API_URL",
                  "help": "Server URL for clients; default: what `mle server start` recorded."},
    )
    token: str | None = field(
        default=None,
        metadata={"env": "MLE_TOKEN",
                  "help": "Bearer token for clients; default: the admin token file under MLE_HOME."},
    )
    project: str = field(
        default="mlengine",
        metadata={"env": "MLE_PROJECT",
                  "help": "Default project id in resource names (projects/PROJECT/...)."},
    )
    database_url: str | None = field(
        default=None,
        metadata={"env": "MLE_DATABASE_URL",
                  "help": "SQLAlchemy URL of the metadata store (sqlite:///... or postgresql://...); "
                          "default: SQLite under MLE_HOME."},
    )
    executor: str = field(
        default="local",
        metadata={"env": "MLE_EXECUTOR", "help": "Where replicas run: local | ray."},
    )
    ray_address: str | None = field(
        default=None, metadata={"env": "MLE_RAY_ADDRESS", "help": "Ray cluster address for the ray executor."}
    )
    capacity_slots: int = field(
        default=0,
        metadata={"env": "MLE_CAPACITY_SLOTS", "help": "CPU slots the local executor may fill; 0 = number of CPUs."},
    )
    cancel_grace_seconds: float = field(
        default=5.0,
        metadata={"env": "MLE_CANCEL_GRACE_SECONDS",
                  "help": "Seconds between SIGTERM and SIGKILL when a job is cancelled."},
    )
    scheduler_interval_seconds: float = field(
        default=0.1,
        metadata={"env": "MLE_SCHEDULER_INTERVAL",
                  "help": "How often the scheduler looks at jobs when nothing wakes it."},
    )
    upload_max_bytes: int = field(
        default=512 * 1024 * 1024,
        metadata={"env": "MLE_UPLOAD_MAX_BYTES", "help": "Largest package the server accepts by upload."},
    )
    log_level: str = field(default="info", metadata={"env": "MLE_LOG_LEVEL", "help": "Server log level."})

    # Derived locations -------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'mlengine.db'}"

    @property
    def token_file(self) -> Path:
        return self.home / "admin_token"

    @property
    def server_file(self) -> Path:
        return self.home / "server.json"

    @property
    def jobs_dir(self) -> Path:
        """Runtime files of jobs: replica logs, working directories, metric files."""
        return self.home / "jobs"

    @property
    def envs_dir(self) -> Path:
        """Python environments of jobs, cached by content hash."""
        return self.home / "envs"

    @property
    def staging_dir(self) -> Path:
        """Packages uploaded through the server."""
        return self.home / "staging"

    @property
    def effective_slots(self) -> int:
        return self.capacity_slots or (os.cpu_count() or 1)


def _coerce(value: str, annotation: Any) -> Any:
    text = str(annotation)
    if "int" in text and "str" not in text:
        return int(value)
    if "float" in text:
        return float(value)
    if "Path" in text:
        return Path(value).expanduser()
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build settings from ``MLE_*`` variables, then explicit overrides (e.g. CLI flags)."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        env_name = f.metadata["env"]
        if env_name in os.environ and os.environ[env_name] != "":
            values[f.name] = _coerce(os.environ[env_name], f.type)
    values.setdefault("home", Path(_default_home()))
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    values["home"] = Path(values["home"]).expanduser().absolute()
    return Settings(**values)


def settings_table() -> list[tuple[str, str]]:
    """(variable, help) for every setting, for docs and ``mle --help``."""
    return [(f.metadata["env"], f.metadata["help"]) for f in fields(Settings)]
