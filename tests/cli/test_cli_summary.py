"""`mle jobs describe --summarize`: a tuning job's trials best first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result
from tests.inprocess import job_body, wait_for_job

from mlengine.cli.summary import summarize
from mlengine.client.http import Client

Run = Callable[..., Result]


def tuning_job(goal: str) -> dict:
    return {
        "jobId": "hp", "state": "SUCCEEDED", "createTime": "2026-01-01T00:00:00.5Z",
        "trainingInput": {"pythonModule": "trainer.task", "hyperparameters": {"goal": goal, "maxTrials": 4}},
        "trainingOutput": {"isHyperparameterTuningJob": True, "hyperparameterMetricTag": "rmse",
                           "completedTrialCount": "3", "trials": [
            {"trialId": "1", "state": "SUCCEEDED", "hyperparameters": {"lr": "0.1"},
             "finalMetric": {"objectiveValue": 3.0, "trainingStep": "10"}},
            {"trialId": "2", "state": "FAILED", "hyperparameters": {"lr": "0.5"}},
            {"trialId": "3", "state": "SUCCEEDED", "hyperparameters": {"lr": "0.01"}, "isTrialStoppedEarly": True,
             "finalMetric": {"objectiveValue": 5.0, "trainingStep": "2"}},
            {"trialId": "4", "state": "SUCCEEDED", "hyperparameters": {"lr": "0.05"},
             "finalMetric": {"objectiveValue": 1.5, "trainingStep": "10"}},
        ]},
    }


def trial_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.split("TRIAL_ID", 1)[1].splitlines()[1:]]


def test_trials_best_first_per_goal() -> None:
    minimize = summarize(tuning_job("MINIMIZE"))
    assert "MINIMIZE 'rmse', 3 of 4 trial(s) completed" in minimize
    rows = trial_rows(minimize)
    assert [r[0] for r in rows] == ["4", "1", "3", "2"]
    assert rows[0][1:4] == ["SUCCEEDED", "1.5", "10"] and rows[2][4] == "yes" and rows[3][1] == "FAILED"
    assert [r[0] for r in trial_rows(summarize(tuning_job("MAXIMIZE")))] == ["3", "1", "4", "2"]


def test_describe_summarize_flag(mle: Run, client: Client, project: str, trainer_package: Path) -> None:
    # A real tuning job: a grid of three learning rates, one of whose trials fails.
    hyperparameters: dict[str, Any] = {
        "goal": "MINIMIZE", "hyperparameterMetricTag": "loss", "maxTrials": 3, "maxParallelTrials": 1,
        "algorithm": "GRID_SEARCH",
        "params": [{"parameterName": "lr", "type": "DISCRETE", "discreteValues": [0.01, 0.1, 0.5]}],
    }
    client.create_job(project, job_body("hp", trainer_package, "--fail-lr", "0.5", hyperparameters=hyperparameters))
    job = wait_for_job(client, project, "hp", timeout=120)
    result = mle("jobs", "describe", "hp", "--summarize")
    assert result.exit_code == 0, result.output
    assert "MINIMIZE 'loss', " in result.stdout
    rows = trial_rows(result.stdout)
    by_lr = {t["hyperparameters"]["lr"]: t["trialId"] for t in job["trainingOutput"]["trials"]}
    assert [r[0] for r in rows] == [by_lr["0.01"], by_lr["0.1"], by_lr["0.5"]]
    assert rows[0][1:3] == ["SUCCEEDED", "0.1"] and rows[1][1:3] == ["SUCCEEDED", "1"]
    assert rows[2][1] == "FAILED"
