"""``preprocessingInput`` of a preprocessing job: an Apache Beam pipeline packaged like a
trainer, validated completely at create, each error naming its field.

Fields (mlengine's; AI Platform ran Beam on Dataflow instead):

- ``packageUris`` (required), ``pythonModule`` (required), ``args``: as ``trainingInput``; the
  module is run as ``python -m MODULE ARGS [runner options] [--job-dir DIR]``, so a pipeline
  that hands its unknown arguments to ``PipelineOptions`` (as the course writes them) runs as is.
- ``pipelineUri`` instead of ``pythonModule``: a Beam pipeline serialized by a notebook or
  script (``--runner=mlengine.client.beam.MLEngineRunner``: Beam's runner API proto, the user's
  functions pickled in it), run by :mod:`mlengine.preprocessing.portable`; a local file the
  server can read. ``packageUris`` may then be empty.
- ``jobDir``: where the pipeline writes (appended as ``--job-dir``); a local one must be
  writable by user code (``MLE_SANDBOX_WRITABLE``), as a training job's.
- ``runner``: ``DirectRunner`` (default; on the job's machine, ``workerCount`` processes) or
  ``DaskRunner`` (Beam's Dask runner: an ephemeral Dask cluster of ``workerCount`` worker
  replicas placed by the executor, or the existing cluster at ``daskAddress``).
- ``directRunningMode``: ``multi_processing`` (default), ``multi_threading`` or ``in_memory``.
- ``workerCount``: 1..64 (int64 as a string, like ml v1's counts); default 2.
- ``daskAddress``: ``tcp://HOST:PORT`` of an existing Dask scheduler (DaskRunner only).
- ``region``, ``runtimeVersion``: recorded; ``scheduling.maxRunningTime``/``maxWaitTime`` as
  for training.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlengine.errors import invalid

FIELD = "preprocessingInput"
RUNNERS = ("DirectRunner", "DaskRunner")
DIRECT_MODES = ("multi_processing", "multi_threading", "in_memory")
DEFAULT_WORKERS = 2
MAX_WORKERS = 64
FIELDS = frozenset({
    "packageUris", "pythonModule", "args", "jobDir", "runner", "directRunningMode", "workerCount",
    "daskAddress", "region", "runtimeVersion", "scheduling", "pipelineUri",
})
#: The module that runs a serialized pipeline (``pipelineUri``).
PORTABLE_MODULE = "mlengine.preprocessing.portable"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DASK_ADDRESS = re.compile(r"^tcp://[A-Za-z0-9.\-]+:\d{1,5}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


@dataclass(frozen=True)
class PreprocessingSpec:
    input: dict[str, Any]
    max_running_seconds: float | None
    max_wait_seconds: float | None


def _strings(value: Any, field: str, required: bool) -> list[str]:
    if value is None:
        if required:
            raise invalid(field, "is required")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(field, "must be a list of strings")
    if required and not value:
        raise invalid(field, "must name at least one package")
    return list(value)


def _duration(value: Any, field: str) -> float:
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise invalid(field, f"must be a positive duration like '3600s', got {value!r}")
    return float(match.group(1))


def workers(pi: Mapping[str, Any]) -> int:
    return int(pi.get("workerCount") or DEFAULT_WORKERS)


def validate_preprocessing_input(pi: Any) -> PreprocessingSpec:
    """The checked ``preprocessingInput`` (a copy with defaults filled in)."""
    if not isinstance(pi, Mapping):
        raise invalid(FIELD, "must be an object")
    for key in pi:
        if key not in FIELDS:
            raise invalid(f"{FIELD}.{key}", f"unknown field {key!r}")
    pipeline = pi.get("pipelineUri")
    if pipeline is not None and (not isinstance(pipeline, str) or not pipeline):
        raise invalid(f"{FIELD}.pipelineUri", "must be the URI of a serialized pipeline")
    out: dict[str, Any] = {"packageUris": _strings(pi.get("packageUris"), f"{FIELD}.packageUris", pipeline is None)}
    module = pi.get("pythonModule")
    if pipeline is not None:
        if module is not None:
            raise invalid(f"{FIELD}.pythonModule", "must not be set with pipelineUri (the server runs the pipeline)")
        out["pipelineUri"] = pipeline
    elif not isinstance(module, str) or not _MODULE.match(module):
        raise invalid(f"{FIELD}.pythonModule", "is required: a Python module name like pipeline.preprocess")
    else:
        out["pythonModule"] = module
    out["args"] = _strings(pi.get("args"), f"{FIELD}.args", False)
    for key in ("jobDir", "region", "runtimeVersion"):
        value = pi.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise invalid(f"{FIELD}.{key}", "must be a string")
        out[key] = value
    runner = pi.get("runner") or "DirectRunner"
    if runner not in RUNNERS:
        raise invalid(f"{FIELD}.runner", f"must be one of {', '.join(RUNNERS)}, got {runner!r}")
    out["runner"] = runner
    mode = pi.get("directRunningMode") or "multi_processing"
    if mode not in DIRECT_MODES:
        raise invalid(f"{FIELD}.directRunningMode", f"must be one of {', '.join(DIRECT_MODES)}, got {mode!r}")
    if runner == "DirectRunner":
        out["directRunningMode"] = mode
    count = pi.get("workerCount", str(DEFAULT_WORKERS))
    try:
        number = int(count)
    except (TypeError, ValueError):
        raise invalid(f"{FIELD}.workerCount", f"must be an integer, got {count!r}") from None
    if isinstance(count, bool) or not 1 <= number <= MAX_WORKERS:
        raise invalid(f"{FIELD}.workerCount", f"must be between 1 and {MAX_WORKERS}, got {count!r}")
    out["workerCount"] = str(number)
    address = pi.get("daskAddress")
    if address is not None:
        if runner != "DaskRunner":
            raise invalid(f"{FIELD}.daskAddress", "is only for runner DaskRunner")
        if not isinstance(address, str) or not _DASK_ADDRESS.match(address):
            raise invalid(f"{FIELD}.daskAddress", f"must be tcp://HOST:PORT, got {address!r}")
        out["daskAddress"] = address
    max_running = max_wait = None
    scheduling = pi.get("scheduling")
    if scheduling is not None:
        if not isinstance(scheduling, Mapping):
            raise invalid(f"{FIELD}.scheduling", "must be an object")
        for key, value in scheduling.items():
            if key == "maxRunningTime":
                max_running = _duration(value, f"{FIELD}.scheduling.{key}")
            elif key == "maxWaitTime":
                max_wait = _duration(value, f"{FIELD}.scheduling.{key}")
            else:
                raise invalid(f"{FIELD}.scheduling.{key}", f"unknown field {key!r}")
        out["scheduling"] = dict(scheduling)
    return PreprocessingSpec(out, max_running, max_wait)
