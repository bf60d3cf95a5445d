"""``trainingInput.hyperparameters`` (the ml v1 ``HyperparameterSpec``): validation and search space.

:func:`parse_hyperparameters` checks a spec the way AI Platform does and returns a
:class:`TuningSpec`; every error is ``INVALID_ARGUMENT`` naming the field
(``trainingInput.hyperparameters.params[1].minValue``). The job keeps the spec exactly as the
user wrote it (it is what ``TF_CONFIG.job`` shows); the tuner parses it again when it needs it,
which is cheap and pure.

How parameters map onto Optuna distributions (:meth:`ParamSpec.distribution`), and back to the
``--name=value`` text a trial gets (:meth:`ParamSpec.external`):

=========================  ===============================================================
``DOUBLE``                 ``FloatDistribution(min, max, log=<log scale>)``
``INTEGER``                ``IntDistribution(min, max, log=<log scale>)``
``CATEGORICAL``            ``CategoricalDistribution(categoricalValues)``
``DISCRETE``               ``IntDistribution(0, n-1)`` over the index of ``discreteValues``
                           (ordered, so samplers see neighbours as close)
``UNIT_REVERSE_LOG_SCALE`` the sampler works on ``y = min + max - x`` with a log scale, so
                           values near ``max`` are spread out, as AI Platform documents
=========================  ===============================================================

This module imports Optuna lazily: ``jobspec`` (and so the CLI) validates specs with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlengine.core.names import JOB_ID_RE
from mlengine.errors import invalid

FIELD = "trainingInput.hyperparameters"
DEFAULT_METRIC_TAG = "training/hptuning/metric"
GOALS = ("GOAL_TYPE_UNSPECIFIED", "MAXIMIZE", "MINIMIZE")
ALGORITHMS = ("ALGORITHM_UNSPECIFIED", "GRID_SEARCH", "RANDOM_SEARCH")
TYPES = ("DOUBLE", "INTEGER", "CATEGORICAL", "DISCRETE")
SCALES = ("NONE", "UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE", "UNIT_REVERSE_LOG_SCALE")
LOG_SCALES = ("UNIT_LOG_SCALE", "UNIT_REVERSE_LOG_SCALE")
GRID_TYPES = ("INTEGER", "CATEGORICAL", "DISCRETE")
SPEC_FIELDS = frozenset({
    "goal", "params", "maxTrials", "maxParallelTrials", "maxFailedTrials", "hyperparameterMetricTag",
    "resumePreviousJobId", "enableTrialEarlyStopping", "algorithm",
})
PARAM_FIELDS = frozenset({
    "parameterName", "type", "minValue", "maxValue", "categoricalValues", "discreteValues", "scaleType",
})
MAX_DISCRETE_VALUES = 1000
MAX_GRID_POINTS = 100_000
MAX_TRIALS_LIMIT = 10_000
#: Parameter names become ``--name=value`` arguments.
PARAM_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class ParamSpec:
    """One ``ParameterSpec``, validated. ``discrete`` and ``categories`` are empty unless the
    type uses them; ``low``/``high`` are ``None`` for CATEGORICAL and DISCRETE."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    discrete: tuple[float, ...] = ()
    scale: str = "NONE"

    @property
    def log(self) -> bool:
        return self.scale in LOG_SCALES and self.type in ("DOUBLE", "INTEGER")

    @property
    def reversed(self) -> bool:
        return self.scale == "UNIT_REVERSE_LOG_SCALE" and self.type in ("DOUBLE", "INTEGER")

    def bounds(self) -> tuple[float, float]:
        """(minValue, maxValue) of a DOUBLE or INTEGER parameter (validation guarantees both)."""
        if self.low is None or self.high is None:
            raise ValueError(f"parameter {self.name} of type {self.type} has no bounds")
        return self.low, self.high

    def distribution(self) -> Any:
        """The Optuna distribution the sampler draws this parameter's internal value from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "DOUBLE":
            low, high = self.bounds()
            return FloatDistribution(low, high, log=self.log)
        if self.type == "INTEGER":
            low, high = self.bounds()
            return IntDistribution(int(low), int(high), log=self.log)
        if self.type == "CATEGORICAL":
            return CategoricalDistribution(list(self.categories))
        return IntDistribution(0, len(self.discrete) - 1)

    def grid_values(self) -> list[Any]:
        """Internal values of every grid point (INTEGER, CATEGORICAL, DISCRETE only)."""
        if self.type == "INTEGER":
            low, high = self.bounds()
            return list(range(int(low), int(high) + 1))
        if self.type == "CATEGORICAL":
            return list(self.categories)
        if self.type == "DISCRETE":
            return list(range(len(self.discrete)))
        raise ValueError(f"{self.type} parameters have no grid")

    def grid_size(self) -> int:
        if self.type == "INTEGER":
            low, high = self.bounds()
            return int(high) - int(low) + 1
        return len(self.categories) if self.type == "CATEGORICAL" else len(self.discrete)

    def external(self, internal: Any) -> str:
        """The value a trial gets as ``--name=value`` (and ``trials[].hyperparameters``)."""
        if self.type == "CATEGORICAL":
            return str(internal)
        if self.type == "DISCRETE":
            return format_number(self.discrete[int(internal)])
        low, high = self.bounds()
        if self.type == "INTEGER":
            value = int(internal)
            if self.reversed:
                value = int(low) + int(high) - value
            return str(value)
        number = float(internal)
        if self.reversed:
            number = min(max(low + high - number, low), high)
        return repr(number)


@dataclass(frozen=True)
class TuningSpec:
    """A validated ``HyperparameterSpec`` with AI Platform's defaults applied."""

    params: tuple[ParamSpec, ...]
    goal: str = "MAXIMIZE"
    metric_tag: str = DEFAULT_METRIC_TAG
    max_trials: int = 1
    max_parallel_trials: int = 1
    max_failed_trials: int = 0
    early_stopping: bool = False
    resume_job_id: str | None = None
    algorithm: str = "ALGORITHM_UNSPECIFIED"

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if self.goal == "MINIMIZE" else "maximize"

    @property
    def is_grid(self) -> bool:
        return self.algorithm == "GRID_SEARCH"

    def grid_size(self) -> int:
        return math.prod(p.grid_size() for p in self.params)

    def failure_limit(self) -> int:
        """Failed trials that end the job: ``maxFailedTrials``, or when unset (0, "the service
        decides") half the trials, at least 3, never more than ``maxTrials``."""
        if self.max_failed_trials > 0:
            return self.max_failed_trials
        return min(self.max_trials, max(3, math.ceil(self.max_trials / 2)))

    def search_space_key(self) -> tuple[Any, ...]:
        """What must be equal for a job to resume another's study (params and objective)."""
        return (tuple(sorted(self.params, key=lambda p: p.name)), self.goal, self.metric_tag)

    def distributions(self) -> dict[str, Any]:
        return {p.name: p.distribution() for p in self.params}

    def external(self, internal: Mapping[str, Any]) -> dict[str, str]:
        """A trial's hyperparameters as its ``--name=value`` strings, in spec order."""
        return {p.name: p.external(internal[p.name]) for p in self.params if p.name in internal}


def format_number(value: float) -> str:
    """``4.0`` -> ``"4"`` (a trainer parsing ``type=int`` accepts it), ``0.5`` -> ``"0.5"``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def parse_number(value: Any, field: str) -> float:
    """A finite number (JSON number or numeric string); INVALID_ARGUMENT naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid(field, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise invalid(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise invalid(field, f"must be a finite number, got {value!r}")
    return number


def _integer(value: Any, field: str, minimum: int, default: int) -> int:
    if value is None:
        return default
    number = parse_number(value, field)
    if not number.is_integer():
        raise invalid(field, f"must be an integer, got {value!r}")
    if number < minimum:
        raise invalid(field, f"must be at least {minimum}, got {int(number)}")
    return int(number)


def _enum(value: Any, field: str, allowed: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise invalid(field, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _param(raw: Any, field: str) -> ParamSpec:
    if not isinstance(raw, Mapping):
        raise invalid(field, "must be an object (a ParameterSpec)")
    for key in raw:
        if key not in PARAM_FIELDS:
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in ParameterSpec")
    name = raw.get("parameterName")
    if not isinstance(name, str) or not name:
        raise invalid(f"{field}.parameterName", "is required")
    if not PARAM_NAME_RE.match(name):
        raise invalid(f"{field}.parameterName",
                      f"{name!r} must start with a letter and hold only letters, digits, '_', '-' or '.' "
                      "(it is passed to the trainer as --name=value)")
    kind = raw.get("type")
    if kind not in TYPES:
        raise invalid(f"{field}.type", f"is required and must be one of {', '.join(TYPES)}, got {kind!r}")
    scale = _enum(raw.get("scaleType"), f"{field}.scaleType", SCALES, "NONE")
    present = {k for k, v in raw.items() if v is not None}

    if kind in ("DOUBLE", "INTEGER"):
        for key in ("categoricalValues", "discreteValues"):
            if key in present:
                raise invalid(f"{field}.{key}", f"must not be set for a {kind} parameter")
        bounds = []
        for key in ("minValue", "maxValue"):
            if key not in present:
                raise invalid(f"{field}.{key}", f"is required for a {kind} parameter")
            number = parse_number(raw[key], f"{field}.{key}")
            if kind == "INTEGER" and not number.is_integer():
                raise invalid(f"{field}.{key}", f"must be an integer for an INTEGER parameter, got {raw[key]!r}")
            bounds.append(number)
        low, high = bounds
        if high <= low:
            raise invalid(f"{field}.maxValue", f"must be greater than minValue ({format_number(low)})")
        if scale in LOG_SCALES and low <= 0:
            raise invalid(f"{field}.minValue",
                          f"must be positive with {scale}: the whole range must be strictly positive")
        return ParamSpec(name, kind, low, high, scale=scale)

    for key in ("minValue", "maxValue"):
        if key in present and kind == "CATEGORICAL":
            raise invalid(f"{field}.{key}", "must not be set for a CATEGORICAL parameter")
    if kind == "CATEGORICAL":
        if "discreteValues" in present:
            raise invalid(f"{field}.discreteValues", "must not be set for a CATEGORICAL parameter")
        if scale != "NONE":
            raise invalid(f"{field}.scaleType", "must be unset for a CATEGORICAL parameter")
        values = raw.get("categoricalValues")
        if not isinstance(values, list) or not values:
            raise invalid(f"{field}.categoricalValues", "is required: a non-empty list of strings")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise invalid(f"{field}.categoricalValues[{i}]", f"must be a string, got {value!r}")
            if value in values[:i]:
                raise invalid(f"{field}.categoricalValues[{i}]", f"{value!r} is listed twice")
        return ParamSpec(name, kind, categories=tuple(values))

    if "categoricalValues" in present:
        raise invalid(f"{field}.categoricalValues", "must not be set for a DISCRETE parameter")
    values = raw.get("discreteValues")
    if not isinstance(values, list) or not values:
        raise invalid(f"{field}.discreteValues", "is required: a non-empty list of numbers")
    if len(values) > MAX_DISCRETE_VALUES:
        raise invalid(f"{field}.discreteValues", f"holds {len(values)} values; at most {MAX_DISCRETE_VALUES}")
    numbers = [parse_number(v, f"{field}.discreteValues[{i}]") for i, v in enumerate(values)]
    for i in range(1, len(numbers)):
        if numbers[i] <= numbers[i - 1]:
            raise invalid(f"{field}.discreteValues[{i}]",
                          "the values must be in strictly increasing order "
                          f"({format_number(numbers[i])} follows {format_number(numbers[i - 1])})")
    if scale in LOG_SCALES and numbers[0] <= 0:
        raise invalid(f"{field}.discreteValues[0]", f"must be positive with {scale}")
    return ParamSpec(name, kind, discrete=tuple(numbers), scale=scale)


def parse_hyperparameters(raw: Any, field: str = FIELD) -> TuningSpec:
    """Validate a ``HyperparameterSpec`` as AI Platform does; errors name the field."""
    if not isinstance(raw, Mapping):
        raise invalid(field, "must be an object (a HyperparameterSpec)")
    for key in raw:
        if key not in SPEC_FIELDS:
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in HyperparameterSpec")
    goal = _enum(raw.get("goal"), f"{field}.goal", GOALS, "MAXIMIZE")
    goal = "MAXIMIZE" if goal == "GOAL_TYPE_UNSPECIFIED" else goal
    algorithm = _enum(raw.get("algorithm"), f"{field}.algorithm", ALGORITHMS, "ALGORITHM_UNSPECIFIED")
    max_trials = _integer(raw.get("maxTrials"), f"{field}.maxTrials", 1, 1)
    if max_trials > MAX_TRIALS_LIMIT:
        raise invalid(f"{field}.maxTrials", f"must be at most {MAX_TRIALS_LIMIT}, got {max_trials}")
    parallel = _integer(raw.get("maxParallelTrials"), f"{field}.maxParallelTrials", 1, 1)
    failed = _integer(raw.get("maxFailedTrials"), f"{field}.maxFailedTrials", 0, 0)
    tag = raw.get("hyperparameterMetricTag")
    if tag is not None and (not isinstance(tag, str) or not tag.strip()):
        raise invalid(f"{field}.hyperparameterMetricTag", "must be a non-empty string")
    early = raw.get("enableTrialEarlyStopping")
    if early is not None and not isinstance(early, bool):
        raise invalid(f"{field}.enableTrialEarlyStopping", f"must be true or false, got {early!r}")
    resume = raw.get("resumePreviousJobId")
    if resume is not None and (not isinstance(resume, str) or not JOB_ID_RE.match(resume)):
        raise invalid(f"{field}.resumePreviousJobId", f"{resume!r} is not a job id")

    raw_params = raw.get("params")
    if not isinstance(raw_params, list) or not raw_params:
        raise invalid(f"{field}.params", "is required: a non-empty list of ParameterSpec")
    params: list[ParamSpec] = []
    for i, item in enumerate(raw_params):
        param = _param(item, f"{field}.params[{i}]")
        if any(p.name == param.name for p in params):
            raise invalid(f"{field}.params[{i}].parameterName",
                          f"{param.name!r} is used by another parameter; names must be unique")
        if algorithm == "GRID_SEARCH" and param.type not in GRID_TYPES:
            raise invalid(f"{field}.params[{i}].type",
                          f"GRID_SEARCH needs INTEGER, CATEGORICAL or DISCRETE parameters, not {param.type}")
        params.append(param)
    spec = TuningSpec(
        params=tuple(params), goal=goal, metric_tag=tag.strip() if tag else DEFAULT_METRIC_TAG,
        max_trials=max_trials, max_parallel_trials=parallel, max_failed_trials=failed,
        early_stopping=bool(early), resume_job_id=resume, algorithm=algorithm,
    )
    if spec.is_grid and spec.grid_size() > MAX_GRID_POINTS:
        raise invalid(f"{field}.params",
                      f"the grid has {spec.grid_size()} points; GRID_SEARCH supports at most {MAX_GRID_POINTS}")
    return spec
