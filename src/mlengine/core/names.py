"""Names and labels of resources, by the ``ml`` v1 naming rules (one home for every check).

Every function raises ``INVALID_ARGUMENT`` naming the field, and returns the normalized value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlengine.errors import invalid

#: Job, model and version ids: a letter, then letters, digits and underscores (128 at most).
RESOURCE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
JOB_ID_RE = RESOURCE_ID_RE
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 64
#: Project ids: a lowercase letter, then lowercase letters, digits and hyphens (63 at most).
PROJECT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
#: Operation ids: letters, digits, '_', '-' and '.', starting with a letter or digit.
OPERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
#: Trial ids of the Optimizer (studies): 1, 2, ...
TRIAL_ID_RE = re.compile(r"^[1-9][0-9]{0,17}$")
#: Other path segments (service names, token names): like resource ids, '-' allowed.
SEGMENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")

_SEGMENTS: dict[str, tuple[re.Pattern[str], str]] = {
    "project": (PROJECT_ID_RE, "a project id starts with a lowercase letter and holds at most 63 lowercase "
                               "letters, digits or hyphens"),
    "job": (JOB_ID_RE, "a job id starts with a letter and holds at most 128 letters, digits or underscores"),
    "model": (RESOURCE_ID_RE, "a model name starts with a letter and holds at most 128 letters, digits or "
                              "underscores"),
    "version": (RESOURCE_ID_RE, "a version name starts with a letter and holds at most 128 letters, digits "
                                "or underscores"),
    "operation": (OPERATION_ID_RE, "an operation id holds at most 255 letters, digits, '_', '-' or '.'"),
    "trial": (TRIAL_ID_RE, "a trial id is a positive integer"),
}


def validate_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise invalid("jobId", "is required")
    if not JOB_ID_RE.match(job_id):
        raise invalid(
            "jobId",
            f"{job_id!r} is not a valid job id: it must start with a letter and contain only "
            "letters, digits and underscores, at most 128 characters",
        )
    return job_id


def short_name(value: Any, field: str, kind: str) -> str:
    """A model or version name; a full resource name is accepted and reduced to its last part."""
    if not isinstance(value, str) or not value:
        raise invalid(field, f"the {kind} name is required")
    name = value.rsplit("/", 1)[-1]
    if not RESOURCE_ID_RE.match(name):
        raise invalid(field, f"{kind} name {name!r} must start with a letter and hold at most 128 letters, "
                      "digits or underscores")
    return name


def validate_labels(labels: Any, field: str = "labels") -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise invalid(field, "must be a map of strings")
    if len(labels) > MAX_LABELS:
        raise invalid(field, f"at most {MAX_LABELS} labels are allowed")
    result: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            raise invalid(
                f"{field}.{key}",
                "label keys start with a lowercase letter and hold at most 63 lowercase "
                "letters, digits, '_' or '-'",
            )
        if not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            raise invalid(
                f"{field}.{key}",
                f"label value {value!r} must hold at most 63 lowercase letters, digits, '_' or '-'",
            )
        result[key] = value
    return result


def validate_path_segment(param: str, value: str) -> str:
    """Check one path parameter of a REST route (``project``, ``job``, ``model``, ``version``,
    ``operation``, or any other name: the generic segment rule) before anything is stored or
    any file path is built from it."""
    pattern, rule = _SEGMENTS.get(param, (SEGMENT_RE, "a name starts with a letter and holds at most 128 "
                                                      "letters, digits, '_' or '-'"))
    if not pattern.match(value):
        shown = value if len(value) <= 64 and value.isprintable() else repr(value[:64]) + "..."
        raise invalid(param, f"{shown!r} is not valid: {rule}")
    return value
