"""``StudyConfig`` (AI Platform Optimizer) validation, and values between Vizier and Optuna.

A study config is checked in its own shape (``studyConfig.parameters[0].doubleValueSpec``...),
then translated to the ``HyperparameterSpec`` of tuning jobs and parsed by
:func:`mlengine.tuning.spec.parse_hyperparameters`, so parameters, scales, grid limits and the
Optuna distributions are exactly those of tuning jobs; an error raised there is reported under
the Vizier field it came from (``...params[0].minValue`` -> ``...parameters[0].doubleValueSpec.minValue``).

Mapping onto Optuna:

===============================  =============================================================
``GAUSSIAN_PROCESS_BANDIT``      the Bayesian sampler of tuning jobs (``ALGORITHM_UNSPECIFIED``)
``GRID_SEARCH``/``RANDOM_SEARCH`` as for tuning jobs
``metrics``                      one Optuna objective each (several: a multi-objective study)
``decayCurveStoppingConfig``     the pruner of ``enableTrialEarlyStopping`` (75th percentile)
``medianAutomatedStoppingConfig`` ``MedianPruner`` (the best value so far below the median of
                                 completed trials at the same step)
===============================  =============================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlengine.errors import Code, MLEngineError, invalid
from mlengine.tuning.spec import ParamSpec, TuningSpec, format_number, parse_hyperparameters, parse_number

ALGORITHMS = ("ALGORITHM_UNSPECIFIED", "GAUSSIAN_PROCESS_BANDIT", "GRID_SEARCH", "RANDOM_SEARCH")
GOALS = ("MAXIMIZE", "MINIMIZE")
TYPES = ("DOUBLE", "INTEGER", "CATEGORICAL", "DISCRETE")
SCALES = ("SCALE_TYPE_UNSPECIFIED", "UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE", "UNIT_REVERSE_LOG_SCALE")
VALUE_SPECS = {"DOUBLE": "doubleValueSpec", "INTEGER": "integerValueSpec",
               "CATEGORICAL": "categoricalValueSpec", "DISCRETE": "discreteValueSpec"}
CONFIG_FIELDS = frozenset({"algorithm", "automatedStoppingConfig", "metrics", "parameters"})
PARAM_FIELDS = frozenset({"parameter", "type", "scaleType", *VALUE_SPECS.values()})
CONDITIONAL_FIELDS = ("childParameterSpecs", "parentCategoricalValues", "parentDiscreteValues", "parentIntValues")
STOPPING_RULES = {"decayCurveStoppingConfig": "decayCurve", "medianAutomatedStoppingConfig": "median"}
#: Budget the Bayesian sampler's random start is sized for (a study has no maxTrials):
#: :func:`mlengine.tuning.samplers.n_startup_trials` gives 10 random trials, Optuna's default.
STARTUP_BUDGET = 60
MAX_METRICS = 16


@dataclass(frozen=True)
class Metric:
    name: str
    goal: str


@dataclass(frozen=True)
class StudyConfig:
    """A validated ``studyConfig``: the tuning spec its parameters make, its metrics (objectives
    in order) and the stopping rule (``decayCurve``, ``median`` or None)."""

    spec: TuningSpec
    metrics: tuple[Metric, ...]
    stopping: str | None

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return ["minimize" if m.goal == "MINIMIZE" else "maximize" for m in self.metrics]

    @property
    def params(self) -> tuple[ParamSpec, ...]:
        return self.spec.params

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.spec.params if p.name == name), None)

    def pruner(self) -> Any:
        import optuna

        from mlengine.tuning.samplers import PRUNER_STARTUP_TRIALS, make_pruner

        if self.stopping == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0,
                                               n_min_trials=PRUNER_STARTUP_TRIALS)
        early = TuningSpec(self.spec.params, early_stopping=self.stopping is not None)
        return make_pruner(early)

    def sampler(self, bayesian: str) -> Any:
        from mlengine.tuning.samplers import make_sampler

        return make_sampler(self.spec, bayesian=bayesian)


def _mapping(value: Any, field: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(field, f"must be an object ({what})")
    return value


def _unimplemented(field: str, why: str) -> MLEngineError:
    return MLEngineError(Code.UNIMPLEMENTED, f"Field: {field} Error: not supported by mlengine: {why}")


def _metrics(raw: Any, field: str) -> tuple[Metric, ...]:
    if not isinstance(raw, list) or not raw:
        raise invalid(field, "is required: a non-empty list of MetricSpec ({metric, goal})")
    if len(raw) > MAX_METRICS:
        raise invalid(field, f"holds {len(raw)} metrics; at most {MAX_METRICS}")
    found: list[Metric] = []
    for i, item in enumerate(raw):
        item = _mapping(item, f"{field}[{i}]", "a MetricSpec")
        for key in item:
            if key not in ("metric", "goal"):
                raise invalid(f"{field}[{i}].{key}", f"unknown field {key!r} in MetricSpec")
        name = item.get("metric")
        if not isinstance(name, str) or not name.strip():
            raise invalid(f"{field}[{i}].metric", "is required: the metric's name")
        if any(m.name == name for m in found):
            raise invalid(f"{field}[{i}].metric", f"{name!r} is listed twice")
        goal = item.get("goal")
        if goal not in GOALS:
            raise invalid(f"{field}[{i}].goal", f"is required and must be one of {', '.join(GOALS)}, got {goal!r}")
        found.append(Metric(name, goal))
    return tuple(found)


def _stopping(raw: Any, field: str, metrics: int) -> str | None:
    if raw is None:
        return None
    raw = _mapping(raw, field, "an AutomatedStoppingConfig")
    rules = []
    for key, value in raw.items():
        if key not in STOPPING_RULES:
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in AutomatedStoppingConfig")
        if value is None:
            continue
        rule = _mapping(value, f"{field}.{key}", "a stopping rule")
        for option, flag in rule.items():
            if option != "useElapsedTime":
                raise invalid(f"{field}.{key}.{option}", f"unknown field {option!r}")
            if not isinstance(flag, bool):
                raise invalid(f"{field}.{key}.useElapsedTime", f"must be true or false, got {flag!r}")
            if flag:
                raise _unimplemented(f"{field}.{key}.useElapsedTime",
                                     "trials are compared at the same stepCount, not elapsed time")
        rules.append(STOPPING_RULES[key])
    if len(rules) > 1:
        raise invalid(field, "set one of decayCurveStoppingConfig or medianAutomatedStoppingConfig, not both")
    if rules and metrics > 1:
        raise invalid(field, "automated stopping needs a single metric (this study has several)")
    return rules[0] if rules else None


def _param(raw: Any, field: str) -> dict[str, Any]:
    """One Vizier ``ParameterSpec`` as a tuning job's ``ParameterSpec`` (values checked later)."""
    raw = _mapping(raw, field, "a ParameterSpec")
    for key in CONDITIONAL_FIELDS:
        if raw.get(key):
            raise _unimplemented(f"{field}.{key}", "conditional parameters")
    for key in raw:
        if key not in PARAM_FIELDS and key not in CONDITIONAL_FIELDS:
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in ParameterSpec")
    kind = raw.get("type")
    if kind not in TYPES:
        raise invalid(f"{field}.type", f"is required and must be one of {', '.join(TYPES)}, got {kind!r}")
    scale = raw.get("scaleType")
    if scale is not None and scale not in SCALES:
        raise invalid(f"{field}.scaleType", f"{scale!r} is not one of {', '.join(SCALES)}")
    wanted = VALUE_SPECS[kind]
    for other in VALUE_SPECS.values():
        if other != wanted and raw.get(other) is not None:
            raise invalid(f"{field}.{other}", f"must not be set for a {kind} parameter (set {wanted})")
    values = _mapping(raw.get(wanted), f"{field}.{wanted}", f"required for a {kind} parameter")
    allowed = ("minValue", "maxValue") if kind in ("DOUBLE", "INTEGER") else ("values",)
    for key in values:
        if key not in allowed:
            raise invalid(f"{field}.{wanted}.{key}", f"unknown field {key!r} in {wanted}")
    out: dict[str, Any] = {"parameterName": raw.get("parameter"), "type": kind}
    if scale not in (None, "SCALE_TYPE_UNSPECIFIED"):
        out["scaleType"] = scale
    if kind in ("DOUBLE", "INTEGER"):
        out.update({k: values.get(k) for k in allowed})
    else:
        out["categoricalValues" if kind == "CATEGORICAL" else "discreteValues"] = values.get("values")
    return out


_FIELD_RE = re.compile(r"Field: (\S+) Error:")


def _vizier_field(field: str, base: str, kinds: list[str]) -> str:
    """A field of the translated spec (``base.params[1].minValue``) as the user wrote it."""
    match = re.match(re.escape(base) + r"\.params(?:\[(\d+)\](.*))?$", field)
    if match is None:
        return field
    if match[1] is None:
        return f"{base}.parameters"
    index, rest = int(match[1]), match[2] or ""
    spec = VALUE_SPECS.get(kinds[index], "") if index < len(kinds) else ""
    rest = re.sub(r"^\.parameterName", ".parameter", rest)
    rest = re.sub(r"^\.(minValue|maxValue)", rf".{spec}.\1", rest)
    rest = re.sub(r"^\.(categoricalValues|discreteValues)", rf".{spec}.values", rest)
    return f"{base}.parameters[{index}]{rest}"


def parse_study_config(raw: Any, field: str = "studyConfig") -> StudyConfig:
    """Validate a ``studyConfig``; errors are 400 naming the field (501 for what mlengine lacks)."""
    raw = _mapping(raw, field, "a StudyConfig")
    for key in raw:
        if key not in CONFIG_FIELDS:
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in StudyConfig")
    algorithm = raw.get("algorithm") or "ALGORITHM_UNSPECIFIED"
    if algorithm not in ALGORITHMS:
        raise invalid(f"{field}.algorithm", f"{algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    metrics = _metrics(raw.get("metrics"), f"{field}.metrics")
    stopping = _stopping(raw.get("automatedStoppingConfig"), f"{field}.automatedStoppingConfig", len(metrics))
    params = raw.get("parameters")
    if not isinstance(params, list) or not params:
        raise invalid(f"{field}.parameters", "is required: a non-empty list of ParameterSpec")
    translated = [_param(p, f"{field}.parameters[{i}]") for i, p in enumerate(params)]
    hyper = {"goal": metrics[0].goal, "params": translated, "maxTrials": STARTUP_BUDGET,
             "algorithm": "ALGORITHM_UNSPECIFIED" if algorithm == "GAUSSIAN_PROCESS_BANDIT" else algorithm}
    try:
        spec = parse_hyperparameters(hyper, field)
    except MLEngineError as error:
        kinds = [str(p["type"]) for p in translated]
        error.message = _FIELD_RE.sub(lambda m: f"Field: {_vizier_field(m[1], field, kinds)} Error:",
                                      error.message, count=1)
        error.args = (error.message,)
        raise
    return StudyConfig(spec, metrics, stopping)


# Values ----------------------------------------------------------------------------------------
def to_vizier(param: ParamSpec, internal: Any) -> dict[str, Any]:
    """A trial's ``Trial.Parameter`` from the value Optuna sampled."""
    out: dict[str, Any] = {"parameter": param.name}
    if param.type == "CATEGORICAL":
        out["stringValue"] = str(internal)
    elif param.type == "DISCRETE":
        out["floatValue"] = param.discrete[int(internal)]
    elif param.type == "INTEGER":
        out["intValue"] = param.external(internal)
    else:
        out["floatValue"] = float(param.external(internal))
    return out


def to_internal(param: ParamSpec, raw: Mapping[str, Any], field: str) -> Any:
    """The Optuna value of a user-given ``Trial.Parameter`` (checked against the spec)."""
    if param.type == "CATEGORICAL":
        value = raw.get("stringValue")
        if value not in param.categories:
            raise invalid(f"{field}.stringValue", f"{value!r} is not one of {', '.join(param.categories)}")
        return value
    if param.type == "DISCRETE":
        number = parse_number(raw.get("floatValue"), f"{field}.floatValue")
        for index, allowed in enumerate(param.discrete):
            if math.isclose(number, allowed, rel_tol=1e-12, abs_tol=1e-12):
                return index
        raise invalid(f"{field}.floatValue", f"{format_number(number)} is not one of the discrete values "
                      + ", ".join(format_number(v) for v in param.discrete))
    key = "intValue" if param.type == "INTEGER" else "floatValue"
    number = parse_number(raw.get(key), f"{field}.{key}")
    low, high = param.bounds()
    if param.type == "INTEGER" and not number.is_integer():
        raise invalid(f"{field}.intValue", f"must be an integer, got {raw.get(key)!r}")
    if not low <= number <= high:
        raise invalid(f"{field}.{key}", f"{format_number(number)} is outside [{format_number(low)}, "
                      f"{format_number(high)}]")
    if param.reversed:
        number = low + high - number
    return int(number) if param.type == "INTEGER" else number


def parse_parameters(config: StudyConfig, raw: Any, field: str) -> dict[str, Any]:
    """A trial's ``parameters`` (every parameter of the study, once) as Optuna values."""
    if not isinstance(raw, list) or not raw:
        raise invalid(field, "is required: a list of {parameter, floatValue|intValue|stringValue}")
    values: dict[str, Any] = {}
    for i, item in enumerate(raw):
        item = _mapping(item, f"{field}[{i}]", "a Trial.Parameter")
        for key in item:
            if key not in ("parameter", "floatValue", "intValue", "stringValue"):
                raise invalid(f"{field}[{i}].{key}", f"unknown field {key!r} in Trial.Parameter")
        name = item.get("parameter")
        param = config.param(name) if isinstance(name, str) else None
        if param is None:
            raise invalid(f"{field}[{i}].parameter", f"{name!r} is not a parameter of the study")
        if name in values:
            raise invalid(f"{field}[{i}].parameter", f"{name!r} is given twice")
        values[param.name] = to_internal(param, item, f"{field}[{i}]")
    missing = [p.name for p in config.params if p.name not in values]
    if missing:
        raise invalid(field, f"lacks the study's parameters {', '.join(missing)}")
    return values


def parse_measurement(raw: Any, field: str) -> dict[str, Any]:
    """A ``Measurement`` as stored: ``stepCount`` (a string, int64 as JSON has it) and metrics."""
    raw = _mapping(raw, field, "a Measurement")
    for key in raw:
        if key not in ("metrics", "stepCount", "elapsedTime"):
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in Measurement")
    out: dict[str, Any] = {}
    step = raw.get("stepCount")
    if step is not None:
        number = parse_number(step, f"{field}.stepCount")
        if not number.is_integer() or number < 0 or number >= 2**63:
            raise invalid(f"{field}.stepCount", f"must be a non-negative integer, got {step!r}")
        out["stepCount"] = str(int(number))
    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise invalid(f"{field}.metrics", "is required: a non-empty list of {metric, value}")
    seen: list[dict[str, Any]] = []
    for i, item in enumerate(metrics):
        item = _mapping(item, f"{field}.metrics[{i}]", "a Measurement.Metric")
        for key in item:
            if key not in ("metric", "value"):
                raise invalid(f"{field}.metrics[{i}].{key}", f"unknown field {key!r} in Measurement.Metric")
        name = item.get("metric")
        if not isinstance(name, str) or not name:
            raise invalid(f"{field}.metrics[{i}].metric", "is required: the metric's name")
        if any(m["metric"] == name for m in seen):
            raise invalid(f"{field}.metrics[{i}].metric", f"{name!r} is given twice")
        seen.append({"metric": name, "value": parse_number(item.get("value"), f"{field}.metrics[{i}].value")})
    out["metrics"] = seen
    return out


def objective_values(config: StudyConfig, measurement: Mapping[str, Any], field: str) -> list[float]:
    """The study's metrics in a measurement, in objective order; 400 naming the one missing."""
    by_name = {m["metric"]: float(m["value"]) for m in measurement.get("metrics", [])}
    missing = [m.name for m in config.metrics if m.name not in by_name]
    if missing:
        raise invalid(f"{field}.metrics", f"lacks the study's metric {', '.join(repr(n) for n in missing)}")
    return [by_name[m.name] for m in config.metrics]
