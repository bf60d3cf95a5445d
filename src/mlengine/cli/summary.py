"""``mle jobs describe --summarize``: a job as a few human-readable tables (gcloud's flag).

For a hyperparameter tuning job the trials are listed best first (by ``finalMetric``, per the
job's goal), then the trials without a final metric by trial id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlengine.cli import output


def _best_first(trials: list[Mapping[str, Any]], goal: str) -> list[Mapping[str, Any]]:
    sign = -1.0 if goal == "MAXIMIZE" else 1.0

    def key(trial: Mapping[str, Any]) -> tuple[int, float, int]:
        trial_id = str(trial.get("trialId", ""))
        number = int(trial_id) if trial_id.isdigit() else 0
        metric = trial.get("finalMetric")
        if not metric or metric.get("objectiveValue") is None:
            return (1, 0.0, number)
        return (0, sign * float(metric["objectiveValue"]), number)

    return sorted(trials, key=key)


def summarize(job: Mapping[str, Any]) -> str:
    """The job overview, then (for a tuning job) its trials, best first."""
    overview = {
        "jobId": job.get("jobId"), "state": job.get("state"),
        "created": output.short_time(job.get("createTime")), "started": output.short_time(job.get("startTime")),
        "ended": output.short_time(job.get("endTime")),
    }
    parts = [output.table([overview], [("JOB_ID", "jobId"), ("STATUS", "state"), ("CREATED", "created"),
                                       ("STARTED", "started"), ("ENDED", "ended")])]
    ti = job.get("trainingInput") or {}
    inputs = {"module": ti.get("pythonModule"), "tier": ti.get("scaleTier"), "jobDir": ti.get("jobDir"),
              "region": ti.get("region")}
    parts.append(output.table([inputs], [("PYTHON_MODULE", "module"), ("SCALE_TIER", "tier"),
                                         ("JOB_DIR", "jobDir"), ("REGION", "region")]))
    if job.get("errorMessage"):
        parts.append(f"ERROR: {job['errorMessage']}")
    out = job.get("trainingOutput") or {}
    if out.get("isHyperparameterTuningJob"):
        spec = ti.get("hyperparameters") or {}
        goal = spec.get("goal") or "MAXIMIZE"
        trials = list(out.get("trials") or [])
        parts.append(
            f"Hyperparameter tuning: {goal} '{out.get('hyperparameterMetricTag')}', "
            f"{out.get('completedTrialCount', '0')} of {spec.get('maxTrials', 1)} trial(s) completed; "
            "trials best first:")
        rows = []
        for trial in _best_first(trials, goal):
            metric = trial.get("finalMetric") or {}
            value = metric.get("objectiveValue")
            rows.append({
                "trialId": trial.get("trialId"), "state": trial.get("state"),
                "objective": "" if value is None else f"{float(value):.6g}",
                "step": metric.get("trainingStep", ""),
                "early": "yes" if trial.get("isTrialStoppedEarly") else "",
                "hyperparameters": " ".join(f"{k}={v}" for k, v in (trial.get("hyperparameters") or {}).items()),
            })
        if rows:
            parts.append(output.table(rows, [
                ("TRIAL_ID", "trialId"), ("STATE", "state"), ("OBJECTIVE", "objective"), ("STEP", "step"),
                ("STOPPED_EARLY", "early"), ("HYPERPARAMETERS", "hyperparameters")]))
    return "\n\n".join(parts)
