"""Typed settings: every ``MLE_*`` environment variable is declared once, here.

Each setting is a field of :class:`Settings` (a pydantic-settings model) whose
``validation_alias`` is its environment variable and whose ``description`` is its help text.
Types and constraints are declared on the field, so a bad value is rejected when settings
are loaded, with a message naming the variable, the value and what is valid
(:class:`~mlengine.errors.MLEngineError`, ``INVALID_ARGUMENT``).

Settings are read when :func:`load_settings` is called (never at import time) so tests and
subprocesses can point ``MLE_HOME`` elsewhere.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from mlengine.errors import Code, MLEngineError

DEFAULT_HOME = "~/.mlengine"

_PORT_RANGE_VALID = "must be LOW-HIGH with 1024 <= LOW < HIGH <= 65535, e.g. 20000-32767"


def _check_port_range(text: str) -> str:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text)
    if match is None or not 1024 <= int(match[1]) < int(match[2]) <= 65535:
        raise ValueError(_PORT_RANGE_VALID)
    return text


_JOB_KINDS_VALID = "must be comma-separated package.module:Class paths"
_HOSTS_VALID = "must be comma-separated host names or addresses, or *"
_HOST_RE = re.compile(r"\*|[a-z0-9.:\[\]-]+")
_SCHEMES_VALID = "must be comma-separated URI schemes such as file,gs,s3,https"
_SCHEME_NAME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
_KIND_PATH_RE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
_PATHS_VALID = "must be comma-separated absolute paths"
_ENV_NAMES_VALID = "must be comma-separated variable names or PREFIX* patterns"
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
_RUNTIMES_VALID = ("must be a JSON object (or the path of a JSON file holding one) mapping each runtime, "
                   "e.g. \"2.11\" or \"pytorch-1.13\", to a list of requirements, e.g. "
                   "{\"2.11\": [\"tensorflow-cpu==2.11.*\"]}")


# Constrained types; what each accepts is spelled out in error messages by _valid_text.
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeNumber = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PortRange = Annotated[str, AfterValidator(_check_port_range), Field(json_schema_extra={"valid": _PORT_RANGE_VALID})]


def _env(name: str, help: str, **kwargs: Any) -> Any:
    """A setting read from environment variable ``name``, documented by ``help``."""
    return Field(validation_alias=name, description=help, **kwargs)


class Settings(BaseSettings):
    """Resolved configuration of one process (server, CLI or executor); immutable."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,  # MLE_EXECUTOR, not mle_executor: environment names are exact
        env_ignore_empty=True,  # MLE_X= (empty) means unset
        extra="forbid",
    )

    home: Path = _env("MLE_HOME", "State directory (default ~/.mlengine).",
                      default=Path(DEFAULT_HOME), validate_default=True)
    api_url: str | None = _env(
        "MLE_API_URL", "Server URL for clients; default: what `mle server start` recorded.", default=None)
    token: str | None = _env(
        "MLE_TOKEN", "Bearer token for clients; default: the admin token file under MLE_HOME.", default=None)
    project: str = _env(
        "MLE_PROJECT", "Default project id in resource names (projects/PROJECT/...).", default="mlengine")
    database_url: str | None = _env(
        "MLE_DATABASE_URL",
        "SQLAlchemy URL of the metadata store (sqlite:///... or postgresql://...); "
        "default: SQLite under MLE_HOME.",
        default=None,
    )
    executor: Literal["local", "ray"] = _env("MLE_EXECUTOR", "Where replicas run: local | ray.", default="local")
    ray_address: str | None = _env("MLE_RAY_ADDRESS", "Ray cluster address for the ray executor.", default=None)
    job_kinds: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_JOB_KINDS", "Extra job kinds the server loads, comma-separated package.module:Class paths "
        "(each a mlengine.jobs.kinds.JobKind taking a KindContext).", default=(),
        json_schema_extra={"valid": _JOB_KINDS_VALID})
    service_kinds: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_SERVICE_KINDS", "Extra service kinds the server loads, comma-separated package.module:Class paths "
        "(each a mlengine.services.ServiceKind taking a ServiceContext).", default=(),
        json_schema_extra={"valid": _JOB_KINDS_VALID})
    service_proxy_wait_seconds: NonNegativeNumber = _env(
        "MLE_SERVICE_PROXY_WAIT",
        "Seconds a proxied request waits for a starting (or idle-stopped) service before 503.",
        default=30.0)
    capacity_slots: NonNegativeInt = _env(
        "MLE_CAPACITY_SLOTS", "CPUs the local executor may hand out to replicas; 0 = number of CPUs.", default=0)
    # Distributed training (machine types, resources, ports, Ray) --------------------------
    machine_types_file: Path | None = _env(
        "MLE_MACHINE_TYPES",
        "YAML file of extra machine types (NAME: {cpus, memoryGb, gpus}); "
        "default: MLE_HOME/machine_types.yaml if it exists.",
        default=None,
    )
    resource_mode: Literal["auto", "machine", "process"] = _env(
        "MLE_RESOURCE_MODE",
        "What a replica holds: machine = its machine type's CPUs, memory and GPUs; "
        "process = at most 1 CPU and no memory (replicas share one machine); auto = "
        "process for the local executor and a Ray that mlengine starts, "
        "machine for --ray-address.",
        default="auto",
    )
    local_gpus: Annotated[int, Field(ge=-1)] = _env(
        "MLE_LOCAL_GPUS", "GPUs the local executor may hand out; -1 = as many as nvidia-smi lists.", default=-1)
    port_range: PortRange = _env(
        "MLE_PORT_RANGE", "Ports replicas listen on for their cluster (LOW-HIGH).", default="20000-32767")
    ray_num_cpus: NonNegativeInt = _env(
        "MLE_RAY_NUM_CPUS",
        "CPUs of the local Ray that mlengine starts without --ray-address; 0 = number of CPUs.",
        default=0,
    )
    ray_placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = _env(
        "MLE_RAY_PLACEMENT_STRATEGY",
        "Ray placement group strategy for a job's replicas: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD.",
        default="PACK",
    )
    ray_placement_timeout_seconds: PositiveNumber = _env(
        "MLE_RAY_PLACEMENT_TIMEOUT",
        "Seconds a job waits for Ray to place all its replicas before it fails.",
        default=60.0,
    )
    cancel_grace_seconds: NonNegativeNumber = _env(
        "MLE_CANCEL_GRACE_SECONDS", "Seconds between SIGTERM and SIGKILL when a job is cancelled.", default=5.0)
    scheduler_interval_seconds: PositiveNumber = _env(
        "MLE_SCHEDULER_INTERVAL", "How often the scheduler looks at jobs when nothing wakes it.", default=0.1)
    upload_max_bytes: PositiveInt = _env(
        "MLE_UPLOAD_MAX_BYTES", "Largest package the server accepts by upload.", default=512 * 1024 * 1024)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = _env(
        "MLE_LOG_LEVEL", "Server log level.", default="info")
    log_format: Literal["text", "json"] = _env(
        "MLE_LOG_FORMAT", "Server log format: text | json (one JSON object a line, with the request id of "
        "each HTTP request: X-Request-Id; docs/observability.md).", default="text")
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = _env(
        "MLE_METRICS_PORT", "Also serve GET /metrics on this port, without a token (0, the default: only on "
        "the API port, with a token holding mlengine.metrics.get).", default=0)
    metrics_host: str = _env(
        "MLE_METRICS_HOST", "Address MLE_METRICS_PORT is bound to.", default="127.0.0.1")
    tuning_bayesian: Literal["tpe", "gp"] = _env(
        "MLE_TUNING_BAYESIAN", "Model behind Bayesian hyperparameter tuning: tpe | gp (gp needs torch).",
        default="tpe")
    # Confinement of user code (trainer replicas) -------------------------------------------
    sandbox: Literal["landlock", "off"] = _env(
        "MLE_SANDBOX",
        "How trainer replicas are confined: landlock = a Landlock sandbox (they cannot read MLE_HOME, the "
        "database or the server user's credentials, and have no capabilities); the server refuses to start "
        "where the kernel has no Landlock. off = trainers can read everything the server can, its admin "
        "token included.",
        default="landlock",
    )
    sandbox_writable: Annotated[tuple[str, ...] | None, NoDecode] = _env(
        "MLE_SANDBOX_WRITABLE",
        "Directories every trainer may write besides its own, comma-separated absolute paths; a job's "
        "local jobDir must be inside one. Default: the system temporary directory (/tmp).",
        default=None, json_schema_extra={"valid": _PATHS_VALID})
    sandbox_hidden: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_SANDBOX_HIDDEN",
        "More paths trainers may not read, comma-separated absolute paths (MLE_HOME, the SQLite database "
        "and the server user's ~/.aws, ~/.ssh, ~/.config/gcloud... are always hidden).",
        default=(), json_schema_extra={"valid": _PATHS_VALID})
    sandbox_env: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_SANDBOX_ENV",
        "More variables trainers inherit from the server's (or Ray node's) environment, comma-separated "
        "names or PREFIX* patterns (PATH, LANG, LC_*, TZ, LD_LIBRARY_PATH and the GPU selection variables "
        "always pass; nothing else of the server's environment does).",
        default=(), json_schema_extra={"valid": _ENV_NAMES_VALID})
    allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = _env(
        "MLE_ALLOWED_HOSTS",
        "Host names the server answers state-changing requests for (DNS rebinding), comma-separated; "
        "* = any. Default: the loopback names and the host it is bound to (any name when bound to all "
        "interfaces).", default=None, json_schema_extra={"valid": _HOSTS_VALID})
    # URIs the server fetches for users (no server-side request forgery) --------------------
    uri_schemes: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_URI_SCHEMES",
        "URI schemes the server reads and writes for users (packageUris, jobDir, deploymentUri), "
        "comma-separated; file = local paths.",
        default=("file", "gs", "gcs", "s3", "s3a", "az", "abfs", "hdfs", "http", "https", "memory"),
        json_schema_extra={"valid": _SCHEMES_VALID})
    storage_roots: Annotated[tuple[str, ...], NoDecode] = _env(
        "MLE_STORAGE_ROOTS",
        "Local directories users' local paths must lie under, comma-separated absolute paths; default: "
        "anywhere but MLE_HOME (whose upload staging area stays allowed).",
        default=(), json_schema_extra={"valid": _PATHS_VALID})
    uri_allow_private_networks: bool = _env(
        "MLE_URI_ALLOW_PRIVATE_NETWORKS",
        "Let http(s) URIs point at loopback, link-local (cloud metadata) and private addresses.",
        default=False)
    # Online prediction (models and versions) ---------------------------------------------
    predict_max_body_bytes: PositiveInt = _env(
        "MLE_PREDICT_MAX_BODY_BYTES", "Largest prediction request body (413 beyond).", default=1536 * 1024)
    predict_timeout_seconds: PositiveNumber = _env(
        "MLE_PREDICT_TIMEOUT", "Seconds a prediction may take in a replica before 504.", default=60.0)
    predict_max_batch: PositiveInt = _env(
        "MLE_PREDICT_MAX_BATCH", "Most instances a replica merges into one model call.", default=256)
    predict_max_instances: PositiveInt = _env(
        "MLE_PREDICT_MAX_INSTANCES", "Most instances one prediction request may hold (400 beyond).", default=10_000)
    predict_batch_wait_ms: NonNegativeNumber = _env(
        "MLE_PREDICT_BATCH_WAIT_MS", "Extra milliseconds a replica under load waits to fill a batch.", default=0.0)
    predict_queue_limit: PositiveInt = _env(
        "MLE_PREDICT_QUEUE_LIMIT",
        "Requests in flight per replica (and while scaling from zero) before 429.",
        default=256,
    )
    serving_idle_seconds: PositiveNumber = _env(
        "MLE_SERVING_IDLE_SECONDS", "Idle time after which a version with minNodes 0 scales to zero.",
        default=300.0)
    serving_max_nodes: NonNegativeInt = _env(
        "MLE_SERVING_MAX_NODES", "Default autoScaling.maxNodes of a version; 0 = number of CPUs.", default=0)
    serving_target_inflight: PositiveNumber = _env(
        "MLE_SERVING_TARGET_INFLIGHT", "Requests in flight per replica the autoscaler aims for.", default=16.0)
    serving_start_timeout_seconds: PositiveNumber = _env(
        "MLE_SERVING_START_TIMEOUT", "Seconds a replica may take to load its model.", default=180.0)
    serving_zygotes: Literal["on", "off"] = _env(
        "MLE_SERVING_ZYGOTES",
        "on: fork replicas from per-framework processes that pre-import it; off: fresh interpreters.",
        default="on",
    )
    serving_backend: Literal["local", "ray"] = _env(
        "MLE_SERVING_BACKEND",
        "Where model replicas run: local (processes on this machine, reached over unix sockets) or ray "
        "(Ray actors spread over the cluster of MLE_RAY_ADDRESS, reached over authenticated TCP).",
        default="local",
    )
    model_max_files: PositiveInt = _env(
        "MLE_MODEL_MAX_FILES", "Most files a version's deploymentUri may hold.", default=1000)
    model_max_bytes: PositiveInt = _env(
        "MLE_MODEL_MAX_BYTES", "Largest total size of a version's deploymentUri.", default=4 * 1024 * 1024 * 1024)
    model_allow_pickle: bool = _env(
        "MLE_MODEL_ALLOW_PICKLE",
        "Serve model files that run code when loaded: model.joblib and model.pkl (scikit-learn, pickled "
        "XGBoost) and TorchScript model.pt. false = only data formats (SavedModel, ONNX, XGBoost "
        "model.json/model.ubj/model.bst); custom prediction routines are code either way. See "
        "docs/serving.md, 'Model formats and trust'.", default=True)
    # Monitoring (request logs, skew and drift; docs/monitoring.md) ------------------------------
    monitoring_log_capacity: PositiveInt = _env(
        "MLE_MONITORING_LOG_CAPACITY",
        "Logged predict calls held in memory before writing; beyond it calls are dropped (and counted), "
        "never delayed.", default=100_000)
    monitoring_log_flush_seconds: PositiveNumber = _env(
        "MLE_MONITORING_LOG_FLUSH_SECONDS", "Seconds between writes of request-log files.", default=10.0)
    monitoring_webhook_allow_http: bool = _env(
        "MLE_MONITORING_WEBHOOK_ALLOW_HTTP", "Let monitoringConfig.alertWebhook be an http:// URL.", default=False)

    # Runtimes (runtimeVersion, pre-built images) -----------------------------------------------
    runtimes: Annotated[tuple[tuple[str, tuple[str, ...]], ...], NoDecode] = _env(
        "MLE_RUNTIMES",
        "Runtimes that serve a job's or version's runtimeVersion, or a pre-built image's framework: a JSON "
        "object, or the path of a JSON file, mapping a runtime (\"2.11\", \"tensorflow-2.11\", "
        "\"pytorch-1.13\") to the requirements uv installs into its environment, e.g. "
        "{\"2.11\": [\"tensorflow-cpu==2.11.*\"]}. Without a match the server's own packages serve it, with a "
        "warning on the job or version (docs/runtimes.md).",
        default=(), json_schema_extra={"valid": _RUNTIMES_VALID})

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("job_kinds", "service_kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for entry in value:
            if not isinstance(entry, str) or not _KIND_PATH_RE.fullmatch(entry):
                raise ValueError(_JOB_KINDS_VALID)
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        for entry in value or ():
            if not isinstance(entry, str) or not _HOST_RE.fullmatch(entry):
                raise ValueError(_HOSTS_VALID)
        return value

    @field_validator("uri_schemes", mode="before")
    @classmethod
    def _split_schemes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip().lower() for part in value.split(",") if part.strip())
        for entry in value:
            if not isinstance(entry, str) or not _SCHEME_NAME_RE.fullmatch(entry):
                raise ValueError(_SCHEMES_VALID)
        return value

    @field_validator("sandbox_writable", "sandbox_hidden", "storage_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if value is None:
            return value
        paths = []
        for entry in value:
            path = os.path.expanduser(str(entry))
            if not os.path.isabs(path):
                raise ValueError(_PATHS_VALID)
            paths.append(os.path.normpath(path))
        return tuple(paths)

    @field_validator("sandbox_env", mode="before")
    @classmethod
    def _split_env_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for entry in value:
            if not isinstance(entry, str) or not _ENV_NAME_RE.fullmatch(entry):
                raise ValueError(_ENV_NAMES_VALID)
        return value

    @field_validator("runtimes", mode="before")
    @classmethod
    def _load_runtimes(cls, value: Any) -> Any:
        return _parse_runtimes(value)

    @field_validator("machine_types_file")
    @classmethod
    def _expand_machine_types(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values (overrides) win over the environment; no .env or secrets files.
        return init_settings, env_settings

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
    def services_dir(self) -> Path:
        """Services' directories and logs (``services/<project>/<name>/``)."""
        return self.home / "services"

    @property
    def serving_dir(self) -> Path:
        """Runtime files of online prediction: replica sockets, logs, zygotes."""
        return self.home / "serving"

    @property
    def sandbox_writable_paths(self) -> tuple[str, ...]:
        """``MLE_SANDBOX_WRITABLE``, or the system temporary directory when it is not set."""
        if self.sandbox_writable is not None:
            return self.sandbox_writable
        import tempfile

        return (os.path.realpath(tempfile.gettempdir()),)

    @property
    def runtime_table(self) -> dict[str, tuple[str, ...]]:
        """``MLE_RUNTIMES``: runtime → the requirements installed for it."""
        return dict(self.runtimes)

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


def _parse_runtimes(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``MLE_RUNTIMES`` (JSON text or a file path) as sorted ``(runtime, requirements)`` pairs,
    every requirement checked by PEP 508 (a bad one stops the server, naming the variable)."""
    import json

    from packaging.requirements import InvalidRequirement, Requirement

    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            try:
                text = Path(os.path.expanduser(text)).read_text()
            except OSError as err:
                raise ValueError(f"cannot read {value}: {err.strerror}") from None
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(_RUNTIMES_VALID) from None
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, dict):
        raise ValueError(_RUNTIMES_VALID)
    pairs = []
    for runtime, requirements in value.items():
        if not isinstance(runtime, str) or not runtime.strip() or not isinstance(requirements, (list, tuple)) \
                or not all(isinstance(r, str) for r in requirements):
            raise ValueError(_RUNTIMES_VALID)
        for requirement in requirements:
            try:
                Requirement(requirement)
            except InvalidRequirement as err:
                raise ValueError(f"runtime {runtime!r}: {err}") from None
        pairs.append((runtime.strip(), tuple(requirements)))
    return tuple(sorted(pairs))


def _env_name(field: FieldInfo) -> str:
    alias = field.validation_alias
    if not isinstance(alias, str):
        raise TypeError("every setting declares its MLE_* variable as its validation_alias")
    return alias


_ENV_NAMES: dict[str, str] = {name: _env_name(f) for name, f in Settings.model_fields.items()}
_FIELD_OF_ENV: dict[str, str] = {env: name for name, env in _ENV_NAMES.items()}


def _valid_text(field: FieldInfo) -> str:
    """What a setting accepts, from its declared type and constraints (for error messages)."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("valid"), str):
        return str(extra["valid"])
    annotation = field.annotation
    if typing.get_origin(annotation) is Literal:
        return "must be one of " + ", ".join(str(choice) for choice in typing.get_args(annotation))
    if annotation in (Path, Path | None):
        return "must be a path"
    kind = "an integer" if annotation is int else "a number" if annotation is float else None
    if kind is None:
        return "must be a string"
    bounds = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds.append(f">= {constraint.ge}")
        elif isinstance(constraint, annotated_types.Gt):
            bounds.append(f"> {constraint.gt}")
    return f"must be {kind}" + (f" {' and '.join(bounds)}" if bounds else "")


def _invalid_settings(err: ValidationError) -> MLEngineError:
    """One INVALID_ARGUMENT naming every bad variable, its value and what is valid."""
    problems: list[str] = []
    seen: set[str] = set()
    for error in err.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        name = _FIELD_OF_ENV.get(key, key)
        if name in seen:
            continue  # one problem per variable (a union type reports one error per member)
        if name not in Settings.model_fields:
            problems.append(f"{key or 'settings'}: {error['msg']}")
            continue
        seen.add(name)
        problems.append(f"{_ENV_NAMES[name]}={error['input']!r} is not valid: "
                        f"{_valid_text(Settings.model_fields[name])}")
    return MLEngineError(Code.INVALID_ARGUMENT, "; ".join(problems))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from ``MLE_*`` variables, then explicit overrides (e.g. CLI flags).

    An override of ``None`` means "not given". ``home`` is expanded and made absolute
    (default ``~/.mlengine``). A bad value raises :class:`MLEngineError` (INVALID_ARGUMENT)
    naming the variable, the value and what is valid.
    """
    unknown = sorted(set(overrides) - set(_ENV_NAMES))
    if unknown:
        raise TypeError(f"load_settings() got unknown settings: {', '.join(unknown)}")
    values = {_ENV_NAMES[key]: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**values)
    except ValidationError as err:
        raise _invalid_settings(err) from None


def settings_table() -> list[tuple[str, str]]:
    """(variable, help) for every setting, for docs and ``mle --help``."""
    return [(_ENV_NAMES[name], field.description or "") for name, field in Settings.model_fields.items()]
