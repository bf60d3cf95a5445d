"""``predictionInput`` of a batch prediction job: validated completely at create, each error
naming its field (``predictionInput.inputPaths[1]``).

Shape checks only; what needs the server's state (the model exists, the inputs match, the
output directory is empty) is :mod:`mlengine.batch.kind`'s. The stored input keeps ml v1's
field names, with int64 fields as strings (``"batchSize": "64"``) as the discovery document
types them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlengine.errors import invalid

#: Input formats: ml v1's, plus PARQUET and JSONL (JSON objects, one per line) of mlengine.
LINE_FORMATS = ("JSON", "JSONL", "TEXT", "CSV")
RECORD_FORMATS = ("TF_RECORD", "TF_RECORD_GZIP")
INPUT_FORMATS = (*LINE_FORMATS, *RECORD_FORMATS, "PARQUET")
#: Formats whose instances may be objects, so that a ``keyField`` can be taken out of them.
KEYED_FORMATS = ("JSON", "JSONL", "PARQUET", "TF_RECORD", "TF_RECORD_GZIP")
#: Output formats: JSON (ml v1's default), plus CSV and PARQUET of mlengine.
OUTPUT_FORMATS = ("JSON", "CSV", "PARQUET")
DEFAULT_BATCH_SIZE = 64
MAX_BATCH_SIZE = 100_000
DEFAULT_MAX_WORKERS = 10
MAX_RETRIES = 3

FIELDS = frozenset({
    "modelName", "versionName", "uri", "dataFormat", "outputDataFormat", "inputPaths", "outputPath",
    "maxWorkerCount", "batchSize", "signatureName", "runtimeVersion", "region", "keyField",
    "maxRunningTime", "maxRetries",
})
MODEL_FIELDS = ("modelName", "versionName", "uri")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
_MODEL = re.compile(r"^projects/([^/]+)/models/([^/]+)$")
_VERSION = re.compile(r"^projects/([^/]+)/models/([^/]+)/versions/([^/]+)$")


@dataclass(frozen=True)
class PredictionSpec:
    input: dict[str, Any]
    max_running_seconds: float | None
    max_retries: int


def _string(pi: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = pi.get(key)
    if value is None or value == "":
        if required:
            raise invalid(f"predictionInput.{key}", "is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"predictionInput.{key}", "must be a string")
    return value


def _count(pi: Mapping[str, Any], key: str, default: int | None, maximum: int) -> int | None:
    value = pi.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise invalid(f"predictionInput.{key}", f"must be an integer between 1 and {maximum}, got {value!r}")
    return value


def _format(pi: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str | None) -> str:
    value = _string(pi, key, required=default is None)
    if value is None or value == "DATA_FORMAT_UNSPECIFIED":
        if default is None:
            raise invalid(f"predictionInput.{key}", f"is required: one of {', '.join(allowed)}")
        return default
    if value.upper() not in allowed:
        raise invalid(f"predictionInput.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
    return value.upper()


def model_reference(value: str, field: str, version: bool) -> tuple[str, str, str | None]:
    """``(project, model, version)`` of a ``modelName`` or ``versionName``."""
    match = (_VERSION if version else _MODEL).match(value)
    if not match:
        shape = "projects/PROJECT/models/MODEL" + ("/versions/VERSION" if version else "")
        raise invalid(field, f"must look like {shape}, got {value!r}")
    groups = match.groups()
    return groups[0], groups[1], groups[2] if version else None


def validate_prediction_input(pi: Any) -> PredictionSpec:
    if not isinstance(pi, Mapping):
        raise invalid("predictionInput", "must be an object")
    for key in pi:
        if key not in FIELDS:
            raise invalid(f"predictionInput.{key}", "unknown field of PredictionInput")
    given = [key for key in MODEL_FIELDS if pi.get(key)]
    if len(given) != 1:
        got = f" (got {', '.join(given)})" if given else ""
        raise invalid("predictionInput.modelName", f"set exactly one of modelName, versionName or uri{got}")
    out: dict[str, Any] = {}
    model_field = given[0]
    out[model_field] = _string(pi, model_field)
    if model_field != "uri":
        model_reference(out[model_field], f"predictionInput.{model_field}", model_field == "versionName")
    out["dataFormat"] = _format(pi, "dataFormat", INPUT_FORMATS, None)
    out["outputDataFormat"] = _format(pi, "outputDataFormat", OUTPUT_FORMATS, "JSON")
    paths = pi.get("inputPaths")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise invalid("predictionInput.inputPaths", "is required: a list of file paths or URIs (wildcards allowed)")
    out["inputPaths"] = list(paths)
    out["outputPath"] = _string(pi, "outputPath", required=True)
    out["batchSize"] = str(_count(pi, "batchSize", DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE))
    workers = _count(pi, "maxWorkerCount", None, 1000)
    if workers is not None:
        out["maxWorkerCount"] = str(workers)
    for key in ("signatureName", "runtimeVersion", "region"):
        value = _string(pi, key)
        if value:
            out[key] = value
    key_field = _string(pi, "keyField")
    if key_field:
        if out["dataFormat"] not in KEYED_FORMATS:
            raise invalid("predictionInput.keyField", f"needs instances that are objects ({', '.join(KEYED_FORMATS)}), "
                          f"not {out['dataFormat']}")
        out["keyField"] = key_field
    max_running = None
    if pi.get("maxRunningTime") is not None:
        match = _DURATION.match(str(pi["maxRunningTime"])) if isinstance(pi["maxRunningTime"], str) else None
        if not match or float(match.group(1)) <= 0:
            raise invalid("predictionInput.maxRunningTime", f"must be a positive duration like '3600s', "
                          f"got {pi['maxRunningTime']!r}")
        max_running = float(match.group(1))
        out["maxRunningTime"] = pi["maxRunningTime"]
    retries = pi.get("maxRetries", MAX_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise invalid("predictionInput.maxRetries", f"must be an integer between 0 and 10, got {retries!r}")
    return PredictionSpec(out, max_running, retries)
