"""Validation of ``trainingInput.hyperparameters`` and its Optuna search space."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.training.jobspec import validate_training_input
from mlengine.tuning.spec import DEFAULT_METRIC_TAG, parse_hyperparameters

F = "trainingInput.hyperparameters"
VALID: dict[str, Any] = {
    "goal": "MINIMIZE",
    "hyperparameterMetricTag": "rmse",
    "maxTrials": 10,
    "maxParallelTrials": 2,
    "params": [
        {"parameterName": "lr", "type": "DOUBLE", "minValue": 0.001, "maxValue": 0.1, "scaleType": "UNIT_LOG_SCALE"},
        {"parameterName": "layers", "type": "INTEGER", "minValue": 1, "maxValue": 5},
        {"parameterName": "act", "type": "CATEGORICAL", "categoricalValues": ["relu", "tanh"]},
        {"parameterName": "batch", "type": "DISCRETE", "discreteValues": [16, 32, 64.5]},
        {"parameterName": "decay", "type": "DOUBLE", "minValue": 0.5, "maxValue": 0.99,
         "scaleType": "UNIT_REVERSE_LOG_SCALE"},
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    target: Any = spec
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return spec


def test_valid_spec_and_defaults() -> None:
    spec = parse_hyperparameters(VALID)
    assert spec.goal == "MINIMIZE" and spec.direction == "minimize" and spec.metric_tag == "rmse"
    assert (spec.max_trials, spec.max_parallel_trials, spec.max_failed_trials) == (10, 2, 0)
    assert [p.name for p in spec.params] == ["lr", "layers", "act", "batch", "decay"]
    minimal = parse_hyperparameters({"params": [VALID["params"][1]]})
    assert minimal.goal == "MAXIMIZE" and minimal.metric_tag == DEFAULT_METRIC_TAG
    assert (minimal.max_trials, minimal.max_parallel_trials) == (1, 1)
    assert minimal.algorithm == "ALGORITHM_UNSPECIFIED" and not minimal.early_stopping
    assert parse_hyperparameters({**VALID, "goal": "GOAL_TYPE_UNSPECIFIED"}).goal == "MAXIMIZE"


@pytest.mark.parametrize(("change", "field"), [
    (("goal", "UP"), f"{F}.goal"),
    (("algorithm", "HILL_CLIMBING"), f"{F}.algorithm"),
    (("maxTrials", 0), f"{F}.maxTrials"),
    (("maxTrials", 2.5), f"{F}.maxTrials"),
    (("maxParallelTrials", -1), f"{F}.maxParallelTrials"),
    (("maxFailedTrials", -1), f"{F}.maxFailedTrials"),
    (("enableTrialEarlyStopping", "yes"), f"{F}.enableTrialEarlyStopping"),
    (("hyperparameterMetricTag", ""), f"{F}.hyperparameterMetricTag"),
    (("resumePreviousJobId", "not a job"), f"{F}.resumePreviousJobId"),
    (("params", []), f"{F}.params"),
    (("params", ...), f"{F}.params"),
    (("surprise", 1), f"{F}.surprise"),
    (("params.0", "lr"), f"{F}.params[0]"),
    (("params.0.parameterName", ...), f"{F}.params[0].parameterName"),
    (("params.0.parameterName", "has space"), f"{F}.params[0].parameterName"),
    (("params.1.parameterName", "lr"), f"{F}.params[1].parameterName"),
    (("params.0.type", "FLOAT"), f"{F}.params[0].type"),
    (("params.0.type", "PARAMETER_TYPE_UNSPECIFIED"), f"{F}.params[0].type"),
    (("params.0.minValue", ...), f"{F}.params[0].minValue"),
    (("params.0.maxValue", "big"), f"{F}.params[0].maxValue"),
    (("params.0.maxValue", 0.001), f"{F}.params[0].maxValue"),
    (("params.0.minValue", 0), f"{F}.params[0].minValue"),  # log scale needs a positive range
    (("params.4.minValue", -1), f"{F}.params[4].minValue"),  # reverse log too
    (("params.0.scaleType", "UNIT_SQRT_SCALE"), f"{F}.params[0].scaleType"),
    (("params.0.categoricalValues", ["a"]), f"{F}.params[0].categoricalValues"),
    (("params.1.minValue", 1.5), f"{F}.params[1].minValue"),
    (("params.2.categoricalValues", []), f"{F}.params[2].categoricalValues"),
    (("params.2.categoricalValues", ["a", "a"]), f"{F}.params[2].categoricalValues[1]"),
    (("params.2.categoricalValues", ["a", 1]), f"{F}.params[2].categoricalValues[1]"),
    (("params.2.minValue", 1), f"{F}.params[2].minValue"),
    (("params.2.scaleType", "UNIT_LOG_SCALE"), f"{F}.params[2].scaleType"),
    (("params.3.discreteValues", [1, 3, 2]), f"{F}.params[3].discreteValues[2]"),
    (("params.3.discreteValues", [1, 1]), f"{F}.params[3].discreteValues[1]"),
    (("params.3.discreteValues", ...), f"{F}.params[3].discreteValues"),
    (("params.3.discreteValues", list(range(1001))), f"{F}.params[3].discreteValues"),
    (("params.3.categoricalValues", ["a"]), f"{F}.params[3].categoricalValues"),
    (("params.3.extra", 1), f"{F}.params[3].extra"),
])
def test_invalid_specs_name_the_field(change: tuple[str, Any], field: str) -> None:
    with pytest.raises(MLEngineError) as info:
        parse_hyperparameters(with_change(*change))
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message.startswith(f"Field: {field} Error: "), info.value.message


def test_log_scale_on_discrete_needs_positive_values() -> None:
    spec = with_change("params.3.discreteValues", [0, 1, 2])
    spec["params"][3]["scaleType"] = "UNIT_LOG_SCALE"
    with pytest.raises(MLEngineError, match=rf"Field: {F}.params\[3\].discreteValues\[0\]"):
        parse_hyperparameters(spec)


def test_grid_search_needs_discrete_types_and_a_bounded_grid() -> None:
    grid = {**VALID, "algorithm": "GRID_SEARCH"}
    with pytest.raises(MLEngineError, match=rf"Field: {F}.params\[0\].type Error: GRID_SEARCH"):
        parse_hyperparameters(grid)
    ok = parse_hyperparameters({**grid, "params": VALID["params"][1:4]})
    assert ok.is_grid and ok.grid_size() == 5 * 2 * 3
    huge = {**grid, "params": [{"parameterName": "n", "type": "INTEGER", "minValue": 1, "maxValue": 10**6}]}
    with pytest.raises(MLEngineError, match=rf"Field: {F}.params Error: the grid has"):
        parse_hyperparameters(huge)


def test_job_validation_accepts_and_refuses_hyperparameters() -> None:
    ti = {"packageUris": ["/p.tar.gz"], "pythonModule": "trainer.task", "hyperparameters": VALID}
    assert validate_training_input(ti).training_input["hyperparameters"] == VALID
    ti["hyperparameters"] = with_change("params.1.maxValue", 0)
    with pytest.raises(MLEngineError, match=rf"Field: {F}.params\[1\].maxValue"):
        parse_hyperparameters(validate_training_input(ti).training_input["hyperparameters"])


def test_distributions_and_trial_values() -> None:
    spec = parse_hyperparameters(VALID)
    dists = spec.distributions()
    assert dists["lr"].log and (dists["lr"].low, dists["lr"].high) == (0.001, 0.1)
    assert (dists["layers"].low, dists["layers"].high, dists["layers"].log) == (1, 5, False)
    assert list(dists["act"].choices) == ["relu", "tanh"]
    assert (dists["batch"].low, dists["batch"].high) == (0, 2)  # index into discreteValues
    assert dists["decay"].log
    internal = {"lr": 0.01, "layers": 3, "act": "tanh", "batch": 1, "decay": 0.5}
    assert spec.external(internal) == {"lr": "0.01", "layers": "3", "act": "tanh", "batch": "32",
                                       "decay": "0.99"}  # reverse log: low internal = high value
    assert spec.external({**internal, "batch": 2})["batch"] == "64.5"
    reverse_int = parse_hyperparameters({"params": [
        {"parameterName": "k", "type": "INTEGER", "minValue": 1, "maxValue": 100,
         "scaleType": "UNIT_REVERSE_LOG_SCALE"}]})
    assert reverse_int.external({"k": 1}) == {"k": "100"}
    assert reverse_int.external({"k": 100}) == {"k": "1"}


def test_failure_limit_defaults() -> None:
    assert parse_hyperparameters({**VALID, "maxFailedTrials": 4}).failure_limit() == 4
    assert parse_hyperparameters({**VALID, "maxTrials": 1}).failure_limit() == 1
    assert parse_hyperparameters({**VALID, "maxTrials": 4}).failure_limit() == 3
    assert parse_hyperparameters({**VALID, "maxTrials": 20}).failure_limit() == 10


def test_resume_compares_search_spaces_ignoring_order() -> None:
    a = parse_hyperparameters(VALID)
    b = parse_hyperparameters({**VALID, "params": list(reversed(VALID["params"])), "maxTrials": 3})
    assert a.search_space_key() == b.search_space_key()
    c = parse_hyperparameters(with_change("params.1.maxValue", 6))
    assert a.search_space_key() != c.search_space_key()
