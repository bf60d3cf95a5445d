"""Studies, trials and operations of the Optimizer API as ml v1 renders them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlengine.core.timeutil import rfc3339
from mlengine.store.operations import OperationRow
from mlengine.tuning.vizier.config import StudyConfig, to_vizier

TYPE_PREFIX = "type.googleapis.com/google.cloud.ml.v1."
#: Optuna user attributes of a trial (Optuna's own state, params and values hold the rest).
CLIENT_ID, MEASUREMENTS, FINAL, STOPPING, INFEASIBLE = (
    "clientId", "measurements", "finalMeasurement", "stopping", "infeasibleReason")


def optuna_time(value: dt.datetime | None) -> str | None:
    """Optuna stores naive local times."""
    if value is None:
        return None
    return rfc3339(value.astimezone() if value.tzinfo is None else value)


def elapsed(start: dt.datetime | None) -> str:
    """A ``google.protobuf.Duration`` since ``start`` (Optuna's naive local time)."""
    if start is None:
        return "0s"
    seconds = max((dt.datetime.now() - start).total_seconds(), 0.0)
    return f"{seconds:.3f}s"


def trial_state(trial: Any) -> str:
    from optuna.trial import TrialState

    if trial.state == TrialState.WAITING:
        return "REQUESTED"
    if trial.state == TrialState.RUNNING:
        return "STOPPING" if trial.user_attrs.get(STOPPING) else "ACTIVE"
    return "COMPLETED"


def render_trial(study_name: str, config: StudyConfig, trial: Any) -> dict[str, Any]:
    """A ``GoogleCloudMlV1__Trial`` from an Optuna ``FrozenTrial`` (trial id = number + 1)."""
    from optuna.trial import TrialState

    fixed = trial.system_attrs.get("fixed_params") or {}
    values = {**fixed, **trial.params}
    out: dict[str, Any] = {
        "name": f"{study_name}/trials/{trial.number + 1}",
        "state": trial_state(trial),
        "parameters": [to_vizier(p, values[p.name]) for p in config.params if p.name in values],
    }
    attrs = trial.user_attrs
    if attrs.get(CLIENT_ID):
        out["clientId"] = attrs[CLIENT_ID]
    if attrs.get(MEASUREMENTS):
        out["measurements"] = list(attrs[MEASUREMENTS])
    if trial.state == TrialState.COMPLETE and attrs.get(FINAL):
        out["finalMeasurement"] = attrs[FINAL]
    if trial.state == TrialState.FAIL:
        out["trialInfeasible"] = True
        if attrs.get(INFEASIBLE):
            out["infeasibleReason"] = attrs[INFEASIBLE]
    if trial.state != TrialState.WAITING and trial.datetime_start is not None:
        out["startTime"] = optuna_time(trial.datetime_start)
    if trial.datetime_complete is not None:
        out["endTime"] = optuna_time(trial.datetime_complete)
    return out


def render_study(name: str, attrs: Mapping[str, Any], state: str = "ACTIVE") -> dict[str, Any]:
    return {"name": name, "studyConfig": attrs["studyConfig"], "state": state, "createTime": attrs["createTime"]}


def render_operation(row: OperationRow) -> dict[str, Any]:
    """An Optimizer operation (always done: the work is over when the request returns)."""
    out: dict[str, Any] = {
        "name": f"projects/{row.project}/locations/{location_of(row)}/operations/{row.name}",
        "metadata": dict(row.meta or {}), "done": bool(row.done),
    }
    if row.error:
        out["error"] = row.error
    elif row.done:
        out["response"] = row.response or {}
    return out


def location_of(row: OperationRow) -> str:
    """The location of an Optimizer operation, from its target ``projects/p/locations/l/...``."""
    parts = str(row.target).split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "locations" else ""
