"""The taxifare sample tuned for real: 6 trials, 2 in parallel, reporting with cloudml-hypertune,
submitted through the CLI (``--config hptuning_config.yaml``) and through googleapiclient."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.helpers import REPO, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = REPO / "samples" / "taxifare"
DATA = SAMPLE / "data"
TINY = ["--train-data-paths", str(DATA / "taxi-train.csv"), "--eval-data-paths", str(DATA / "taxi-valid.csv"),
        "--train-steps", "10", "--batch-size", "32", "--eval-steps", "5", "--export-format", "none"]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

pytest.importorskip("tensorflow")


def check_trials(job: dict[str, Any], job_dir: Path) -> None:
    assert job["state"] == "SUCCEEDED", job
    out = job["trainingOutput"]
    assert out["isHyperparameterTuningJob"] is True and out["hyperparameterMetricTag"] == "rmse"
    trials = out["trials"]
    assert sorted(int(t["trialId"]) for t in trials) == [1, 2, 3, 4, 5, 6]
    assert out["completedTrialCount"] == "6"
    values = [t["finalMetric"]["objectiveValue"] for t in trials]
    assert values == sorted(values) and all(v > 0 for v in values)  # MINIMIZE: best first
    for t in trials:
        assert set(t["hyperparameters"]) == {"learning_rate", "nbuckets", "hidden-units"}
        assert 0.001 <= float(t["hyperparameters"]["learning_rate"]) <= 0.1
        assert t["hyperparameters"]["hidden-units"] in ("32,8", "64,16", "16")
        # the trainer wrote under <job-dir>/<trialId>/ and saw its trial in TF_CONFIG
        seen = json.loads((job_dir / t["trialId"] / "tf_config_master_0.json").read_text())
        assert seen["task"] == {"type": "master", "index": 0, "trial": t["trialId"]}
    # each trial ran the analyze pass for its nbuckets, cached by value: 6 trials, 4 values (5..8)
    analyses = sorted((job_dir / "analyze").glob("*.json"))
    assert 1 <= len(analyses) == len({t["hyperparameters"]["nbuckets"] for t in trials}) < len(trials)
    spans = sorted((t["startTime"], t["endTime"]) for t in trials)
    overlaps = [sum(1 for s, e in spans if s <= start < e) for start, _ in spans]
    assert max(overlaps) == 2  # two trials at a time, never more


def test_taxifare_tuning_through_cli_and_googleapiclient(server: ServerProcess, tmp_path: Path) -> None:
    config = SAMPLE / "hptuning_config.yaml"
    cli_dir = tmp_path / "cli"
    result = server.mle(
        "jobs", "submit", "training", "taxifare_hp_cli", "--config", str(config),
        "--package-path", str(SAMPLE / "trainer"), "--module-name", "trainer.task", "--job-dir", str(cli_dir),
        "--region", "local", "--stream-logs", "--", *TINY, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "trial-1/master-replica-0" in result.stdout and "eval rmse" in result.stdout
    assert "Analyze pass for nbuckets=" in result.stdout and ": cache hit, transform " in result.stdout
    check_trials(server.job("taxifare_hp_cli"), cli_dir)
    summary = server.mle("jobs", "describe", "taxifare_hp_cli", "--summarize", check=True).stdout
    assert "TRIAL_ID" in summary and "learning_rate=" in summary
    best = server.job("taxifare_hp_cli")["trainingOutput"]["trials"][0]["trialId"]
    rows = summary.split("TRIAL_ID", 1)[1].splitlines()[1:]
    assert rows[0].split()[0] == best

    from google.oauth2.credentials import Credentials
    from googleapiclient import discovery

    from mlengine.core.packaging import build_sdist

    package = build_sdist(SAMPLE / "trainer", tmp_path / "dist")
    gapi_dir = tmp_path / "gapi"
    ml = discovery.build("ml", "v1", credentials=Credentials(token=server.token),
                         client_options={"api_endpoint": server.url + "/"}, cache_discovery=False)
    training_input = yaml.safe_load(config.read_text())["trainingInput"]
    training_input.update({"packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local",
                           "jobDir": str(gapi_dir), "args": TINY})
    name = "projects/mlengine/jobs/taxifare_hp_gapi"
    ml.projects().jobs().create(parent="projects/mlengine",
                                body={"jobId": "taxifare_hp_gapi", "trainingInput": training_input}).execute()
    deadline = time.monotonic() + 900
    job = ml.projects().jobs().get(name=name).execute()
    while job["state"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        job = ml.projects().jobs().get(name=name).execute()
    check_trials(job, gapi_dir)
