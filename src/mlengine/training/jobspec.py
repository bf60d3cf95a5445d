"""Validation of a training job's ``trainingInput`` as ``projects.jobs.create`` receives it.

Everything a job needs is checked here, before anything is stored, so a bad request leaves
nothing behind. Each error names the offending field (``trainingInput.packageUris[0]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlengine.core.runtimes import PrebuiltImage, check_python_version, check_runtime_version, parse_image_uri
from mlengine.errors import invalid
from mlengine.training.cluster import replica_counts

DURATION_RE = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")

#: trainingInput fields of the ml v1 discovery document (GoogleCloudMlV1__TrainingInput).
TRAINING_INPUT_FIELDS = frozenset(
    {
        "args", "enableWebAccess", "encryptionConfig", "evaluatorConfig", "evaluatorCount",
        "evaluatorType", "hyperparameters", "jobDir", "masterConfig", "masterType", "network",
        "packageUris", "parameterServerConfig", "parameterServerCount", "parameterServerType",
        "pythonModule", "pythonVersion", "region", "runtimeVersion", "scaleTier", "scheduling",
        "serviceAccount", "useChiefInTfConfig", "workerConfig", "workerCount", "workerType",
    }
)
#: ``maxRetries`` is mlengine's: how often a job whose replica was killed by a signal or vanished
#: (never one whose trainer exited non-zero) is started again.
SCHEDULING_FIELDS = frozenset({"maxRunningTime", "maxWaitTime", "priority", "maxRetries"})
MAX_RETRIES = 10
REPLICA_CONFIGS = ("masterConfig", "workerConfig", "parameterServerConfig", "evaluatorConfig")


@dataclass(frozen=True)
class TrainingSpec:
    training_input: dict[str, Any]
    max_running_seconds: float | None
    max_wait_seconds: float | None
    max_retries: int = 0
    image: PrebuiltImage | None = None


def parse_duration(value: Any, field: str) -> float:
    match = DURATION_RE.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise invalid(field, f"must be a duration in seconds like '3600s', got {value!r}")
    seconds = float(match.group(1))
    if seconds <= 0:
        raise invalid(field, "must be positive")
    return seconds


def _string_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(field, "must be a list of strings")
    return list(value)


def validate_training_input(ti: Any) -> TrainingSpec:
    """Check ``trainingInput``; return it normalized, with its deadlines."""
    if not isinstance(ti, Mapping):
        raise invalid("trainingInput", "is required and must be an object")
    for key in ti:
        if key not in TRAINING_INPUT_FIELDS:
            raise invalid(f"trainingInput.{key}", f"unknown field {key!r} in TrainingInput")
    training_input = dict(ti)

    for config_key in REPLICA_CONFIGS:
        config = training_input.get(config_key) or {}
        if not isinstance(config, Mapping):
            raise invalid(f"trainingInput.{config_key}", "must be an object")
        uri = config.get("imageUri")
        if uri is not None and not isinstance(uri, str):
            raise invalid(f"trainingInput.{config_key}.imageUri", "must be a string")
        # Google's pre-built framework images run the package with the server's environment
        # (core/runtimes.py); any other image is a custom container.
        if (uri and parse_image_uri(uri) is None) or config.get("containerCommand"):
            raise invalid(
                f"trainingInput.{config_key}.imageUri",
                "custom containers need Docker, which mlengine does not use: submit a Python "
                "package with packageUris and pythonModule instead",
            )
    image = prebuilt_image(training_input)

    module = training_input.get("pythonModule")
    if not isinstance(module, str) or not module.strip():
        raise invalid("trainingInput.pythonModule", "is required (the module to run, e.g. trainer.task)")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", module):
        raise invalid("trainingInput.pythonModule", f"{module!r} is not a Python module name")

    packages = _string_list(training_input.get("packageUris"), "trainingInput.packageUris")
    if not packages:
        raise invalid("trainingInput.packageUris", "at least one package is required")
    training_input["packageUris"] = packages
    training_input["args"] = _string_list(training_input.get("args"), "trainingInput.args")

    # Normalizes and validates the tier and the replica counts.
    replica_counts(training_input)
    training_input.setdefault("scaleTier", "BASIC")

    for key in ("region", "runtimeVersion", "pythonVersion", "jobDir", "masterType", "workerType",
                "parameterServerType", "evaluatorType", "serviceAccount", "network"):
        if key in training_input and not isinstance(training_input[key], str):
            raise invalid(f"trainingInput.{key}", "must be a string")
    runtime = check_runtime_version(training_input.get("runtimeVersion"), "trainingInput.runtimeVersion")
    check_python_version(training_input.get("pythonVersion"), "trainingInput.pythonVersion")
    if runtime and image is not None:
        raise invalid("trainingInput.runtimeVersion", "set either runtimeVersion or a pre-built image "
                      f"({image_field(training_input)}), not both")

    max_running = max_wait = None
    retries = 0
    scheduling = training_input.get("scheduling")
    if scheduling is not None:
        if not isinstance(scheduling, Mapping):
            raise invalid("trainingInput.scheduling", "must be an object")
        for key in scheduling:
            if key not in SCHEDULING_FIELDS:
                raise invalid(f"trainingInput.scheduling.{key}", f"unknown field {key!r}")
        if "maxRunningTime" in scheduling:
            max_running = parse_duration(scheduling["maxRunningTime"], "trainingInput.scheduling.maxRunningTime")
        if "maxWaitTime" in scheduling:
            max_wait = parse_duration(scheduling["maxWaitTime"], "trainingInput.scheduling.maxWaitTime")
        if "maxRetries" in scheduling:
            retries = scheduling["maxRetries"]
            if isinstance(retries, str) and retries.isdigit():
                retries = int(retries)
            if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
                raise invalid("trainingInput.scheduling.maxRetries",
                              f"must be an integer from 0 to {MAX_RETRIES}, got {scheduling['maxRetries']!r}")
    return TrainingSpec(training_input, max_running, max_wait, retries, image)


def image_field(training_input: Mapping[str, Any]) -> str:
    """The field naming the job's pre-built image (the first replica config with an imageUri)."""
    for config_key in REPLICA_CONFIGS:
        if ((training_input.get(config_key) or {}).get("imageUri")):
            return f"trainingInput.{config_key}.imageUri"
    return "trainingInput.masterConfig.imageUri"


def prebuilt_image(training_input: Mapping[str, Any]) -> PrebuiltImage | None:
    """The pre-built image the job's replicas name (one environment serves every replica, so
    they must agree on framework and version); None when none names one."""
    first: tuple[str, PrebuiltImage] | None = None
    for config_key in REPLICA_CONFIGS:
        uri = (training_input.get(config_key) or {}).get("imageUri")
        image = parse_image_uri(uri) if isinstance(uri, str) and uri else None
        if image is None:
            continue
        if first is None:
            first = (config_key, image)
        elif (image.framework, image.version) != (first[1].framework, first[1].version):
            raise invalid(f"trainingInput.{config_key}.imageUri",
                          f"{image.label} differs from {first[1].label} of trainingInput.{first[0]}.imageUri: "
                          "one environment serves every replica of a job")
    return first[1] if first else None
