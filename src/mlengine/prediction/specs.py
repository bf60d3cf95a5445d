"""Validation of Model and Version bodies, and their rendering as ml v1 JSON.

Everything is checked before anything is stored; each error names the field
(``autoScaling.minNodes``). Output-only fields in a request body are ignored; unknown fields
are refused, as AI Platform does. Every input field of ``GoogleCloudMlV1__Version`` and
``__Model`` either works or is refused with 501 UNIMPLEMENTED naming it
(:data:`UNIMPLEMENTED_VERSION_FIELDS`, :data:`UNIMPLEMENTED_MODEL_FLAGS`); none is accepted and
silently dropped. ``runtimeVersion`` and ``pythonVersion`` are recorded as sent and served by a
configured runtime (``MLE_RUNTIMES``: its requirements go into the version's environment) or by
the server's own packages, with the difference in the version's ``warnings``
(:func:`version_runtime`, :mod:`mlengine.core.runtimes`); ``regions`` are recorded (the
server's one region serves every version); ``machineType`` names one of :data:`MACHINE_TYPES`
and caps the CPUs each replica uses.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from mlengine.config import Settings
from mlengine.core.names import short_name, validate_labels
from mlengine.core.runtimes import RuntimeChoice, check_python_version, check_runtime_version, resolve
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid
from mlengine.monitoring.spec import FIELDS as MONITORING_FIELDS
from mlengine.monitoring.spec import validate as validate_monitoring
from mlengine.prediction.frameworks._base import FRAMEWORKS
from mlengine.storage.policy import UriPolicy, uri_policy
from mlengine.store.serving import ModelRow, VersionRow, etag

PREDICTION_CLASS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
MODEL_OUTPUT = frozenset({"etag", "defaultVersion"})
#: mlengine's traffic fields of a Model (set by models.patch, see mlengine.prediction.traffic).
TRAFFIC_FIELDS = ("trafficSplit", "routingKey", "shadowVersions", "canary")
MODEL_INPUT = frozenset({"name", "description", "labels", "regions", "onlinePredictionLogging",
                         "onlinePredictionConsoleLogging", *TRAFFIC_FIELDS})
VERSION_OUTPUT = frozenset({"state", "createTime", "isDefault", "etag", "errorMessage", "lastUseTime",
                            "lastMigrationModelId", "lastMigrationTime", "replicas", "warnings",
                            "transformFingerprint"})
VERSION_INPUT = frozenset({"name", "description", "deploymentUri", "framework", "runtimeVersion", "pythonVersion",
                           "autoScaling", "manualScaling", "predictionClass", "packageUris", "labels",
                           "machineType", *MONITORING_FIELDS})
#: Version fields AI Platform accepts that mlengine does not implement (501 when set).
UNIMPLEMENTED_VERSION_FIELDS = {
    "acceleratorConfig": "online prediction replicas run on CPUs",
    "container": "custom serving containers are not supported; use a custom prediction routine (predictionClass)",
    "routes": "custom serving containers are not supported",
    "serviceAccount": "replicas run as the server's user; per-version service accounts are not supported",
    "explanationConfig": "explanations (projects.explain) are not implemented",
}
#: Model flags mlengine does not implement (501 when true).
UNIMPLEMENTED_MODEL_FLAGS = {
    "onlinePredictionLogging": "prediction access logs are not exported",
    "onlinePredictionConsoleLogging": "replica output stays in the replica log files under MLE_HOME",
}
#: Machine types of online prediction and their vCPUs (AI Platform's legacy mls1 and N1 types).
MACHINE_TYPES: dict[str, int] = {
    "mls1-c1-m2": 1, "mls1-c4-m2": 4,
    **{f"n1-{family}-{n}": n for family in ("standard", "highmem", "highcpu") for n in (2, 4, 8, 16, 32)},
}
SERVER_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: A version's ``framework`` → the framework a runtimeVersion warning names.
_RUNTIME_FRAMEWORKS = {"SCIKIT_LEARN": "scikit-learn", "XGBOOST": "xgboost", "PYTORCH": "pytorch"}


def unimplemented(field: str, why: str) -> MLEngineError:
    """501 UNIMPLEMENTED naming ``field``."""
    return MLEngineError(Code.UNIMPLEMENTED, f"Field: {field} Error: not implemented by mlengine: {why}")


def _check_fields(body: Mapping[str, Any], allowed: frozenset[str], output: frozenset[str], what: str,
                  unimplemented_fields: Mapping[str, str] | None = None) -> None:
    for key in body:
        if unimplemented_fields and key in unimplemented_fields:
            if body[key] in (None, "", {}, []):
                continue  # not set
            raise unimplemented(key, unimplemented_fields[key])
        if key not in allowed and key not in output:
            raise invalid(key, f"unknown field of {what}")


def machine_cpus(machine_type: str | None) -> float | None:
    """vCPUs of a prediction ``machineType`` (None when unset)."""
    return float(MACHINE_TYPES[machine_type]) if machine_type in MACHINE_TYPES else None


def _string(body: Mapping[str, Any], key: str, field: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field or key, "must be a string")
    return value


def validate_model(body: Any, patching: bool = False) -> dict[str, Any]:
    """A Model body; its traffic fields are checked by the patch that sets them
    (:func:`mlengine.prediction.traffic.validate_traffic`): a new model has no versions yet."""
    if not isinstance(body, Mapping):
        raise invalid("model", "the request body must be a JSON object (a Model)")
    _check_fields(body, MODEL_INPUT, MODEL_OUTPUT, "Model")
    for key in TRAFFIC_FIELDS:
        if body.get(key) and not patching:
            raise invalid(key, "can be set once the model has versions (models.patch with updateMask)")
    regions = body.get("regions") or []
    if not isinstance(regions, list) or len(regions) > 1 or not all(isinstance(r, str) for r in regions):
        raise invalid("regions", "must be a list with at most one region")
    spec: dict[str, Any] = {"regions": regions}
    for flag, why in UNIMPLEMENTED_MODEL_FLAGS.items():
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise invalid(flag, "must be true or false")
        if body.get(flag):
            raise unimplemented(flag, why)
    return {
        "name": short_name(body.get("name"), "name", "model"),
        "description": _string(body, "description") or "",
        "labels": validate_labels(body.get("labels")),
        "spec": spec,
    }


def _nodes(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise invalid(field, f"must be an integer >= {minimum}")
    return value


def validate_scaling(body: Mapping[str, Any]) -> dict[str, Any]:
    """``autoScaling``/``manualScaling`` of a Version body, normalized (ints, not both)."""
    out: dict[str, Any] = {}
    auto, manual = body.get("autoScaling"), body.get("manualScaling")
    if auto is not None and manual is not None:
        raise invalid("autoScaling", "set either autoScaling or manualScaling, not both")
    if manual is not None:
        if not isinstance(manual, Mapping):
            raise invalid("manualScaling", "must be an object like {\"nodes\": 1}")
        out["manualScaling"] = {"nodes": _nodes(manual.get("nodes", 1), "manualScaling.nodes", 1)}
    if auto is not None:
        if not isinstance(auto, Mapping):
            raise invalid("autoScaling", "must be an object like {\"minNodes\": 0, \"maxNodes\": 2}")
        scaling: dict[str, Any] = {"minNodes": _nodes(auto.get("minNodes", 0), "autoScaling.minNodes", 0)}
        if auto.get("maxNodes") is not None:
            scaling["maxNodes"] = _nodes(auto["maxNodes"], "autoScaling.maxNodes", 1)
            if scaling["maxNodes"] < scaling["minNodes"]:
                raise invalid("autoScaling.maxNodes", "must not be smaller than autoScaling.minNodes")
        out["autoScaling"] = scaling
    return out


def check_deployment_uri(uri: str, policy: UriPolicy | None) -> None:
    """``deploymentUri`` names a directory this server may read for the user (see
    :mod:`mlengine.storage.policy`: nothing inside ``MLE_HOME``, no private network address).
    http(s) is refused: HTTP cannot list a directory (and a listing would follow redirects)."""
    from mlengine.storage import uris
    from mlengine.storage.policy import is_http

    uris.check_usable(uri, "deploymentUri")
    if policy is not None:
        policy.check(uri, "deploymentUri")
    if is_http(uri):
        raise invalid("deploymentUri", f"{uri}: an http(s) URI cannot name a model directory (HTTP has no "
                      "directory listing); copy the model to a local directory or an object store (gs://, s3://)")


def check_package_uri(uri: str, field: str, policy: UriPolicy | None) -> None:
    """One of ``packageUris``: usable and allowed by the server's URI policy."""
    from mlengine.storage import uris

    uris.check_usable(uri, field)
    if policy is not None:
        policy.check(uri, field)


def validate_version(body: Any, settings: Settings | None = None) -> dict[str, Any]:
    """The stored ``spec`` of a new version (the user's fields, normalized). With ``settings``,
    ``deploymentUri`` and ``packageUris`` are checked against the server's URI policy and, when
    ``MLE_MODEL_ALLOW_PICKLE`` is off, a local ``deploymentUri`` whose model would be unpickled is
    refused (naming the file)."""
    if not isinstance(body, Mapping):
        raise invalid("version", "the request body must be a JSON object (a Version)")
    _check_fields(body, VERSION_INPUT, VERSION_OUTPUT, "Version", UNIMPLEMENTED_VERSION_FIELDS)
    spec: dict[str, Any] = {"name": short_name(body.get("name"), "name", "version")}
    uri = _string(body, "deploymentUri")
    if not uri:
        raise invalid("deploymentUri", "is required: the directory (or URI) holding the exported model")
    from mlengine.storage import uris

    policy = uri_policy(settings) if settings is not None else None
    check_deployment_uri(uri, policy)
    spec["deploymentUri"] = uri
    framework = _string(body, "framework")
    if framework and framework != "FRAMEWORK_UNSPECIFIED":
        framework = framework.upper()
        if framework not in FRAMEWORKS:
            raise invalid("framework", f"must be one of {', '.join(FRAMEWORKS)}, got {body['framework']!r}")
        spec["framework"] = framework
    description = _string(body, "description")
    if description:
        spec["description"] = description
    runtime = check_runtime_version(_string(body, "runtimeVersion"), "runtimeVersion")
    if runtime:
        spec["runtimeVersion"] = runtime
    machine = _string(body, "machineType")
    if machine:
        if machine not in MACHINE_TYPES:
            raise invalid("machineType", f"{machine!r} is not a prediction machine type; use one of "
                          f"{', '.join(MACHINE_TYPES)}")
        spec["machineType"] = machine
    python = check_python_version(_string(body, "pythonVersion"), "pythonVersion")
    spec["pythonVersion"] = python or SERVER_PYTHON
    warnings = version_runtime(spec, settings, asked_python=python).warnings
    if warnings:
        spec["warnings"] = list(warnings)
    spec.update(validate_scaling(body))
    prediction_class = _string(body, "predictionClass")
    if prediction_class:
        if not PREDICTION_CLASS_RE.match(prediction_class):
            raise invalid("predictionClass", f"{prediction_class!r} must be module.ClassName")
        spec["predictionClass"] = prediction_class
    packages = body.get("packageUris")
    if packages is not None:
        if not isinstance(packages, list) or not all(isinstance(p, str) and p for p in packages):
            raise invalid("packageUris", "must be a list of package URIs")
        for i, package in enumerate(packages):
            check_package_uri(package, f"packageUris[{i}]", policy)
            if uris.is_local(package) and not uris.local_path(package).is_file():
                raise invalid(f"packageUris[{i}]", f"{package} does not exist or is not a file readable by the server")
        spec["packageUris"] = list(packages)
    if prediction_class and not packages:
        raise invalid("packageUris", "a predictionClass needs the packages that hold it (packageUris)")
    spec["labels"] = validate_labels(body.get("labels"))
    spec.update(validate_monitoring(body, settings))  # requestLoggingConfig, monitoringConfig, trainingData
    if settings is not None and not settings.model_allow_pickle and uris.is_local(uri):
        _refuse_local_pickle(uri, spec)
    return spec


def version_runtime(spec: Mapping[str, Any], settings: Settings | None, *,
                    asked_python: str | None = None) -> RuntimeChoice:
    """What serves a version's runtimeVersion/pythonVersion (``asked_python``: as the client sent
    it; a stored spec records the server's when it sent none), with its warnings."""
    python = asked_python if asked_python is not None else spec.get("pythonVersion")
    return resolve(settings.runtime_table if settings is not None else {},
                   runtime_version=spec.get("runtimeVersion"), python_version=python,
                   framework=_RUNTIME_FRAMEWORKS.get(str(spec.get("framework")), "tensorflow"))


def _refuse_local_pickle(uri: str, spec: Mapping[str, Any]) -> None:
    """A local ``deploymentUri`` is looked at now (remote ones when they are staged)."""
    from mlengine.prediction import deploy
    from mlengine.storage import uris

    try:
        names = set(os.listdir(uris.local_path(uri)))
    except OSError:
        return  # missing or not a directory: the caller's inspection says so
    deploy.refuse_pickle(uri, names, spec.get("framework"), spec.get("predictionClass"))


# Rendering ----------------------------------------------------------------------------------
def model_name(project: str, model: str) -> str:
    return f"projects/{project}/models/{model}"


def render_version(model: ModelRow, row: VersionRow, replicas: Mapping[str, int] | None = None) -> dict[str, Any]:
    spec = dict(row.spec)
    spec.pop("name", None)
    version: dict[str, Any] = {"name": f"{model_name(model.project, model.name)}/versions/{row.name}", **spec}
    framework = (row.internal or {}).get("framework")
    if framework and "framework" not in version and not spec.get("predictionClass"):
        version["framework"] = framework
    if (row.internal or {}).get("transformFingerprint"):  # the transform the model embeds
        version["transformFingerprint"] = row.internal["transformFingerprint"]
    version.update({
        "state": row.state,
        "isDefault": model.default_version == row.name,
        "createTime": rfc3339(row.create_time),
        "etag": etag(row.id, row.version),
    })
    if not version.get("labels"):
        version.pop("labels", None)
    if row.error_message:
        version["errorMessage"] = row.error_message
    if row.last_use_time:
        version["lastUseTime"] = rfc3339(row.last_use_time)
    if replicas is not None:
        version["replicas"] = dict(replicas)
    return version


def render_model(row: ModelRow, default: VersionRow | None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": model_name(row.project, row.name)}
    if row.description:
        model["description"] = row.description
    if row.labels:
        model["labels"] = row.labels
    spec = row.spec or {}
    if spec.get("regions"):
        model["regions"] = spec["regions"]
    for flag in ("onlinePredictionLogging", "onlinePredictionConsoleLogging"):
        if spec.get(flag):
            model[flag] = True
    for key in TRAFFIC_FIELDS:
        if spec.get(key):
            model[key] = spec[key]
    if default is not None:
        model["defaultVersion"] = render_version(row, default)
    model["etag"] = etag(row.id, row.version)
    return model
