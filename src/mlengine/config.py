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
        metadata={"env": "MLE_CAPACITY_SLOTS",
                  "help": "CPUs the local executor may hand out to replicas; 0 = number of CPUs."},
    )
    # Distributed training (machine types, resources, ports, Ray) --------------------------
    machine_types_file: Path | None = field(
        default=None,
        metadata={"env": "MLE_MACHINE_TYPES",
                  "help": "YAML file of extra machine types (NAME: {cpus, memoryGb, gpus}); "
                          "default: MLE_HOME/machine_types.yaml if it exists."},
    )
    resource_mode: str = field(
        default="auto",
        metadata={"env": "MLE_RESOURCE_MODE",
                  "help": "What a replica holds: machine = its machine type's CPUs, memory and GPUs; "
                          "process = at most 1 CPU and no memory (replicas share one machine); auto = "
                          "process for the local executor and a Ray that mlengine starts, "
                          "machine for --ray-address."},
    )
    local_gpus: int = field(
        default=-1,
        metadata={"env": "MLE_LOCAL_GPUS",
                  "help": "GPUs the local executor may hand out; -1 = as many as nvidia-smi lists."},
    )
    port_range: str = field(
        default="20000-32767",
        metadata={"env": "MLE_PORT_RANGE", "help": "Ports replicas listen on for their cluster (LOW-HIGH)."},
    )
    ray_num_cpus: int = field(
        default=0,
        metadata={"env": "MLE_RAY_NUM_CPUS",
                  "help": "CPUs of the local Ray that mlengine starts without --ray-address; 0 = number of CPUs."},
    )
    ray_placement_strategy: str = field(
        default="PACK",
        metadata={"env": "MLE_RAY_PLACEMENT_STRATEGY",
                  "help": "Ray placement group strategy for a job's replicas: "
                          "PACK | SPREAD | STRICT_PACK | STRICT_SPREAD."},
    )
    ray_placement_timeout_seconds: float = field(
        default=60.0,
        metadata={"env": "MLE_RAY_PLACEMENT_TIMEOUT",
                  "help": "Seconds a job waits for Ray to place all its replicas before it fails."},
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
    tuning_bayesian: str = field(
        default="tpe",
        metadata={"env": "MLE_TUNING_BAYESIAN",
                  "help": "Model behind Bayesian hyperparameter tuning: tpe | gp (gp needs torch)."},
    )
    # Online prediction (models and versions) ---------------------------------------------
    predict_max_body_bytes: int = field(
        default=1536 * 1024,
        metadata={"env": "MLE_PREDICT_MAX_BODY_BYTES", "help": "Largest prediction request body (413 beyond)."},
    )
    predict_timeout_seconds: float = field(
        default=60.0,
        metadata={"env": "MLE_PREDICT_TIMEOUT", "help": "Seconds a prediction may take in a replica before 504."},
    )
    predict_max_batch: int = field(
        default=256,
        metadata={"env": "MLE_PREDICT_MAX_BATCH", "help": "Most instances a replica merges into one model call."},
    )
    predict_batch_wait_ms: float = field(
        default=0.0,
        metadata={"env": "MLE_PREDICT_BATCH_WAIT_MS",
                  "help": "Extra milliseconds a replica under load waits to fill a batch."},
    )
    predict_queue_limit: int = field(
        default=256,
        metadata={"env": "MLE_PREDICT_QUEUE_LIMIT",
                  "help": "Requests in flight per replica (and while scaling from zero) before 429."},
    )
    serving_idle_seconds: float = field(
        default=300.0,
        metadata={"env": "MLE_SERVING_IDLE_SECONDS",
                  "help": "Idle time after which a version with minNodes 0 scales to zero."},
    )
    serving_max_nodes: int = field(
        default=0,
        metadata={"env": "MLE_SERVING_MAX_NODES",
                  "help": "Default autoScaling.maxNodes of a version; 0 = number of CPUs."},
    )
    serving_target_inflight: float = field(
        default=16.0,
        metadata={"env": "MLE_SERVING_TARGET_INFLIGHT",
                  "help": "Requests in flight per replica the autoscaler aims for."},
    )
    serving_start_timeout_seconds: float = field(
        default=180.0,
        metadata={"env": "MLE_SERVING_START_TIMEOUT", "help": "Seconds a replica may take to load its model."},
    )
    serving_zygotes: str = field(
        default="on",
        metadata={"env": "MLE_SERVING_ZYGOTES",
                  "help": "on: fork replicas from per-framework processes that "
                          "pre-import it; off: fresh interpreters."},
    )
    model_max_files: int = field(
        default=1000,
        metadata={"env": "MLE_MODEL_MAX_FILES", "help": "Most files a version's deploymentUri may hold."},
    )
    model_max_bytes: int = field(
        default=4 * 1024 * 1024 * 1024,
        metadata={"env": "MLE_MODEL_MAX_BYTES", "help": "Largest total size of a version's deploymentUri."},
    )

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
    def models_dir(self) -> Path:
        """Managed copies of model versions' files."""
        return self.home / "models"

    @property
    def serving_dir(self) -> Path:
        """Runtime files of online prediction: replica sockets, logs, zygotes."""
        return self.home / "serving"

    @property
    def effective_slots(self) -> int:
        return self.capacity_slots or (os.cpu_count() or 1)

    @property
    def machine_types_path(self) -> Path:
        """The user's machine types file (it may not exist)."""
        return self.machine_types_file or self.home / "machine_types.yaml"

    @property
    def ray_dir(self) -> Path:
        """The local Ray that mlengine starts: its record, auth token and temp dir."""
        return self.home / "ray"


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
