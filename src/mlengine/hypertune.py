"""Report a trial's metric to mlengine's hyperparameter tuning (no dependencies, no heavy imports).

    from mlengine import hypertune

    for step in range(steps):
        ...
        hypertune.report("rmse", rmse, step)      # or hypertune.report(None, rmse, step)

Each call appends one JSON line, in the format of the PyPI package ``cloudml-hypertune``, to
the file named by ``CLOUD_ML_HP_METRIC_FILE`` (set for every trial; outside a tuning job the
default ``/tmp/hypertune/output.metrics`` is used, like ``cloudml-hypertune``):

    {"checkpoint_path": "", "global_step": "100", "rmse": "4.21", "timestamp": 1.7e9, "trial": "3"}

``metric`` is the tag; ``None`` or ``""`` means the job's ``hyperparameterMetricTag``
(``CLOUD_ML_HP_METRIC_TAG``, default ``training/hptuning/metric``). Reports after the first
are what early stopping looks at; the last one is the trial's final metric. Unlike
``cloudml-hypertune``, every report is kept (the file is appended to, never rewritten), and
one ``write`` per line keeps concurrent reporters from interleaving.
"""

from __future__ import annotations

import json
import math
import os
import time

DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
DEFAULT_METRIC_TAG = "training/hptuning/metric"

__all__ = ["report", "metric_file", "metric_tag"]


def metric_file() -> str:
    """Where reports go: ``$CLOUD_ML_HP_METRIC_FILE`` or the cloudml-hypertune default."""
    return os.environ.get("CLOUD_ML_HP_METRIC_FILE") or DEFAULT_METRIC_FILE


def metric_tag() -> str:
    """The job's metric tag: ``$CLOUD_ML_HP_METRIC_TAG`` or ``training/hptuning/metric``."""
    return os.environ.get("CLOUD_ML_HP_METRIC_TAG") or DEFAULT_METRIC_TAG


def report(metric: str | None, value: float, step: int | None = None) -> None:
    """Record ``value`` of ``metric`` (``None``: the job's tag) at training step ``step``.

    Raises ``ValueError`` for a value that is not a finite number, so a NaN loss shows up in
    the trainer's log where it happened instead of as a failed trial later.
    """
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"hypertune.report: the value must be a finite number, got {value!r}")
    record = {
        "checkpoint_path": "",
        "global_step": str(int(step) if step else 0),
        metric or metric_tag(): str(number),
        "timestamp": time.time(),
        "trial": os.environ.get("CLOUD_ML_TRIAL_ID", "0"),
    }
    path = metric_file()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
