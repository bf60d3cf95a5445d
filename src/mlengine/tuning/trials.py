"""Trials of a tuning job: their job rows, how a finished one is judged, and ``trainingOutput``.

A trial is a job row with id ``<parent jobId>/trials/<trialId>`` (users cannot create ids with
``/``, and ``/`` makes its runtime files nest under the parent's:
``MLE_HOME/jobs/<project>/<parent>/trials/<trialId>/``), kind ``trial``, ``parent_pk`` the
tuning job's primary key, and these ``kind_state`` fields:

``trialId``          ``"1"``, ``"2"``, ... (Optuna trial number + 1)
``trialNumber``      the Optuna trial number in the job's study
``hyperparameters``  ``{name: value text}`` passed as ``--name=value``
``stopRequested``    set when early stopping (or the tuner) stops it
``outcome``          set once the tuner recorded the finished trial: ``state`` (SUCCEEDED,
                     FAILED, CANCELLED), ``value``, ``step``, ``stoppedEarly``, ``message``

Its ``trainingInput`` is the parent's (so ``TF_CONFIG.job`` shows the tuning spec, as on AI
Platform) and it carries no time limits of its own: ``scheduling`` applies to the whole job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlengine.core.timeutil import rfc3339
from mlengine.errors import MLEngineError, failed_precondition, invalid
from mlengine.jobs import lifecycle as states
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow
from mlengine.tuning.metrics import TrialMetrics
from mlengine.tuning.spec import FIELD, TuningSpec, parse_hyperparameters


def child_job_id(parent_job_id: str, trial_id: str) -> str:
    return f"{parent_job_id}/trials/{trial_id}"


def study_name(job: JobRow) -> str:
    """The Optuna study of tuning job ``job`` (id plus primary key: never an older job's)."""
    return f"mlengine:{job.project}:{job.job_id}:{job.id}"


@dataclass(frozen=True)
class Outcome:
    """How a finished trial went; ``optuna_state`` is COMPLETE, PRUNED or FAIL."""

    state: str
    optuna_state: str
    value: float | None = None
    step: int | None = None
    stopped_early: bool = False
    message: str = ""

    def as_internal(self) -> dict[str, Any]:
        return {"state": self.state, "value": self.value, "step": self.step,
                "stoppedEarly": self.stopped_early, "message": self.message}


def no_metric_message(trial_id: str, spec: TuningSpec, metrics: TrialMetrics, where: str) -> str:
    message = (f"Trial {trial_id} finished without reporting the metric '{spec.metric_tag}' "
               "(hyperparameterMetricTag), so it counts as failed.")
    if metrics.other_tags:
        message += f" Its metric file holds other tags: {', '.join(sorted(metrics.other_tags))}."
    return message + (
        " Report it with cloudml-hypertune or mlengine.hypertune (they write to "
        f"CLOUD_ML_HP_METRIC_FILE), or as a TensorFlow scalar summary under {where}."
    )


def judge(child: JobRow, metrics: TrialMetrics, spec: TuningSpec, events_where: str) -> Outcome:
    """The outcome of a trial whose job row is terminal, given what it reported."""
    trial_id = str(child.kind_state.get("trialId"))
    final = metrics.final
    value = final.value if final is not None else None
    step = final.step if final is not None else None
    if child.kind_state.get("stopRequested") == "early":
        return Outcome(states.SUCCEEDED, "PRUNED", value, step, stopped_early=True,
                       message=f"Trial {trial_id} was stopped early at step {step}.")
    if child.state == states.SUCCEEDED:
        if final is None:
            return Outcome(states.FAILED, "FAIL",
                           message=no_metric_message(trial_id, spec, metrics, events_where))
        if not math.isfinite(final.value):
            return Outcome(states.FAILED, "FAIL", message=(
                f"Trial {trial_id} reported '{spec.metric_tag}' = {final.value}, which is not a "
                "finite number, so it counts as failed."))
        return Outcome(states.SUCCEEDED, "COMPLETE", final.value, final.step,
                       message=f"Trial {trial_id} finished: {spec.metric_tag} = {final.value:g} "
                               f"at step {final.step} ({metrics.source}).")
    if child.state == states.FAILED:
        return Outcome(states.FAILED, "FAIL", message=f"Trial {trial_id} failed: {child.error_message}")
    return Outcome(states.CANCELLED, "FAIL", message=f"Trial {trial_id} was cancelled.")


def render_trial(child: JobRow) -> dict[str, Any]:
    """One ``HyperparameterOutput`` of the ml v1 API."""
    internal = child.kind_state or {}
    outcome = internal.get("outcome")
    trial: dict[str, Any] = {
        "trialId": str(internal.get("trialId")),
        "hyperparameters": dict(internal.get("hyperparameters") or {}),
        "state": outcome["state"] if outcome else child.state,
    }
    if child.start_time:
        trial["startTime"] = rfc3339(child.start_time)
    if outcome and child.end_time:
        trial["endTime"] = rfc3339(child.end_time)
    if outcome and outcome["state"] == states.SUCCEEDED and outcome.get("value") is not None:
        trial["finalMetric"] = {"trainingStep": str(outcome.get("step") or 0),
                                "objectiveValue": outcome["value"]}
    if outcome and outcome.get("stoppedEarly"):
        trial["isTrialStoppedEarly"] = True
    return trial


def best_first(trials: list[dict[str, Any]], goal: str) -> list[dict[str, Any]]:
    """Trials with a final metric, best first (per ``goal``), then the others by trial id."""
    sign = -1.0 if goal == "MAXIMIZE" else 1.0

    def key(trial: dict[str, Any]) -> tuple[int, float, int]:
        metric = trial.get("finalMetric")
        number = int(trial["trialId"]) if str(trial["trialId"]).isdigit() else 0
        if metric is None:
            return (1, 0.0, number)
        return (0, sign * float(metric["objectiveValue"]), number)

    return sorted(trials, key=key)


def render_output(spec: TuningSpec, children: list[JobRow]) -> dict[str, Any]:
    """``trainingOutput`` of the tuning job: its trials best first, as they stand now."""
    trials = best_first([render_trial(c) for c in children], spec.goal)
    completed = sum(1 for t in trials if t["state"] == states.SUCCEEDED)
    output: dict[str, Any] = {
        "isHyperparameterTuningJob": True,
        "hyperparameterMetricTag": spec.metric_tag,
        "completedTrialCount": str(completed),
    }
    if trials:
        output["trials"] = trials
    return output


def initial_output(spec: TuningSpec) -> dict[str, Any]:
    return render_output(spec, [])


def admit(repo: JobRepository, project: str, training_input: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kind_state`` and the initial ``trainingOutput`` of a new tuning job, after the
    checks that need the store: ``resumePreviousJobId`` must name a finished tuning job of the
    same project with the same ``params``, ``goal`` and ``hyperparameterMetricTag``."""
    spec = parse_hyperparameters(training_input.get("hyperparameters"))
    internal: dict[str, Any] = {}
    if spec.resume_job_id:
        field = f"{FIELD}.resumePreviousJobId"
        try:
            previous = repo.get(project, spec.resume_job_id)
        except MLEngineError:
            raise invalid(field, f"job {spec.resume_job_id!r} does not exist in project {project!r}") from None
        if previous.kind != "tuning":
            raise invalid(field, f"job {spec.resume_job_id!r} is not a hyperparameter tuning job")
        if previous.state not in states.TERMINAL:
            raise failed_precondition(
                f"Field: {field} Error: job {spec.resume_job_id!r} is {previous.state}; only a "
                "finished tuning job can be resumed")
        before = parse_hyperparameters(previous.input.get("hyperparameters"))
        if before.search_space_key() != spec.search_space_key():
            raise invalid(field, f"job {spec.resume_job_id!r} tuned different params, goal or "
                                 "hyperparameterMetricTag; a resumed job must keep them unchanged")
        internal["resumeStudy"] = study_name(previous)
    return internal, initial_output(spec)
