"""Hyperparameter tuning jobs on a real server, with a small fake trainer (fast)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, build_package, write_trainer
from tests.e2e.tuning_trainer import TRAINER

pytestmark = pytest.mark.e2e
JOBS = "/v1/projects/mlengine/jobs"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

PARAMS = [
    {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "UNIT_LINEAR_SCALE"},
    {"parameterName": "n", "type": "INTEGER", "minValue": 1, "maxValue": 4, "scaleType": "UNIT_LOG_SCALE"},
    {"parameterName": "kind", "type": "CATEGORICAL", "categoricalValues": ["a", "b"]},
    {"parameterName": "d", "type": "DISCRETE", "discreteValues": [0.5, 1, 2]},
]
GRID_PARAMS = [
    {"parameterName": "n", "type": "INTEGER", "minValue": 1, "maxValue": 3},
    {"parameterName": "kind", "type": "CATEGORICAL", "categoricalValues": ["a", "b"]},
]


@pytest.fixture(scope="module")
def tuning_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tuning-trainer")
    write_trainer(root, TRAINER)
    return build_package(root)


def tuning_body(job_id: str, package: Path, args: list[str], job_dir: Path | None = None,
                **hyperparameters: Any) -> dict[str, Any]:
    spec = {"goal": "MINIMIZE", "hyperparameterMetricTag": "loss", "maxTrials": 4,
            "maxParallelTrials": 2, "params": PARAMS}
    spec.update(hyperparameters)
    ti: dict[str, Any] = {"packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local",
                          "args": args, "hyperparameters": spec}
    if job_dir is not None:
        ti["jobDir"] = str(job_dir)
    return {"jobId": job_id, "trainingInput": ti}


def submit(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def records(directory: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in directory.glob("*.json"):
        try:
            found[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue  # a trainer is still writing it; it is read on the next poll
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_tuning_job_runs_trials_and_reports_them(server: ServerProcess, tuning_package: Path,
                                                  tmp_path: Path) -> None:
    rec, job_dir = tmp_path / "rec", tmp_path / "out"
    created = submit(server, tuning_body("tune_basic", tuning_package, ["--record", str(rec), "--sleep", "0.3"],
                                         job_dir))
    assert created["trainingOutput"] == {"isHyperparameterTuningJob": True, "hyperparameterMetricTag": "loss",
                                         "completedTrialCount": "0"}
    job = server.wait_state("tune_basic", TERMINAL, timeout=180)
    assert job["state"] == "SUCCEEDED", job
    out = job["trainingOutput"]
    assert out["isHyperparameterTuningJob"] is True and out["hyperparameterMetricTag"] == "loss"
    assert out["completedTrialCount"] == "4"
    trials = out["trials"]
    assert sorted(t["trialId"] for t in trials) == ["1", "2", "3", "4"]
    values = [t["finalMetric"]["objectiveValue"] for t in trials]
    assert values == sorted(values)  # best (smallest) first
    seen = records(rec)
    for t in trials:
        assert t["state"] == "SUCCEEDED" and t["startTime"] <= t["endTime"]
        assert t["finalMetric"]["trainingStep"] == "3"
        assert set(t["hyperparameters"]) == {"x", "n", "kind", "d"}
        assert all(isinstance(v, str) for v in t["hyperparameters"].values())
        hp = t["hyperparameters"]
        assert 0 <= float(hp["x"]) <= 1 and hp["n"] in "1234" and hp["kind"] in "ab" and hp["d"] in ("0.5", "1", "2")
        r = seen[t["trialId"]]
        # hyperparameters as --name=value, before --job-dir; the parent's job dir unchanged
        assert r["argv"][-2:] == ["--job-dir", str(job_dir)]
        assert [a for a in r["argv"] if a.startswith(("--x=", "--n=", "--kind=", "--d="))] == [
            f"--{k}={v}" for k, v in hp.items()]
        assert r["tf_config"]["task"] == {"type": "master", "index": 0, "trial": t["trialId"]}
        assert r["tf_config"]["job"]["hyperparameters"]["maxTrials"] == 4
        assert r["metric_tag"] == "loss"
        assert f"/tune_basic/trials/{t['trialId']}/" in r["metric_file"]
        expected = ((float(hp["x"]) - 0.3) ** 2 + int(hp["n"]) / 10 + (0.05 if hp["kind"] == "b" else 0)
                    + float(hp["d"]) / 100 + 1 / 3)
        assert t["finalMetric"]["objectiveValue"] == pytest.approx(expected, rel=1e-6)
    assert len({r["metric_file"] for r in seen.values()}) == 4
    # two at a time, never three
    spans = sorted((r["start"], r["end"]) for r in seen.values())
    overlaps = [sum(1 for s, e in spans if s <= start < e) for start, _ in spans]
    assert max(overlaps) == 2

    listed = server.api("GET", JOBS).json()["jobs"]
    assert "tune_basic" in [j["jobId"] for j in listed] and not any("/" in j["jobId"] for j in listed)
    tasks = {e["taskName"] for e in server.logs("tune_basic")}
    assert {"service", "trial-1/master-replica-0", "trial-4/service"} <= tasks
    only = {e["taskName"] for e in server.logs("tune_basic", "trial-2")}
    assert only and all(t.startswith("trial-2/") for t in only)
    masters = {e["taskName"] for e in server.logs("tune_basic", "master-replica-0")}
    assert masters == {f"trial-{i}/master-replica-0" for i in range(1, 5)}
    # a trial is not reachable as a job of its own
    assert server.api("GET", f"{JOBS}/tune_basic%2Ftrials%2F1").status_code == 404


def test_grid_search_runs_exactly_the_grid(server: ServerProcess, tuning_package: Path, tmp_path: Path) -> None:
    submit(server, tuning_body("tune_grid", tuning_package, ["--reporter", "mlengine"], algorithm="GRID_SEARCH",
                               maxTrials=20, maxParallelTrials=2, params=GRID_PARAMS))
    job = server.wait_state("tune_grid", TERMINAL, timeout=180)
    assert job["state"] == "SUCCEEDED", job
    trials = job["trainingOutput"]["trials"]
    points = sorted((t["hyperparameters"]["n"], t["hyperparameters"]["kind"]) for t in trials)
    assert points == [(n, k) for n in "123" for k in "ab"]
    assert job["trainingOutput"]["completedTrialCount"] == "6"
    best = trials[0]
    assert best["hyperparameters"] == {"n": "1", "kind": "a"}


def test_early_stopping_stops_a_clearly_bad_trial(server: ServerProcess, tuning_package: Path) -> None:
    args = ["--reporter", "mlengine", "--steps", "4", "--bad-trial", "4", "--bad-steps", "120", "--bad-sleep", "0.25"]
    submit(server, tuning_body("tune_early", tuning_package, args, maxTrials=5, maxParallelTrials=1,
                               enableTrialEarlyStopping=True, algorithm="RANDOM_SEARCH"))
    job = server.wait_state("tune_early", TERMINAL, timeout=180)
    assert job["state"] == "SUCCEEDED", job
    trials = {t["trialId"]: t for t in job["trainingOutput"]["trials"]}
    bad = trials["4"]
    assert bad["isTrialStoppedEarly"] is True and bad["state"] == "SUCCEEDED"
    assert bad["finalMetric"]["objectiveValue"] == 100.0
    assert int(bad["finalMetric"]["trainingStep"]) < 60  # stopped long before its 120 steps
    for trial_id in ("1", "2", "3", "5"):
        assert "isTrialStoppedEarly" not in trials[trial_id]
    assert job["trainingOutput"]["trials"][-1]["trialId"] == "4"  # worst last
    assert job["trainingOutput"]["completedTrialCount"] == "5"


def test_max_failed_trials_ends_a_job_whose_trials_crash(server: ServerProcess, tuning_package: Path) -> None:
    submit(server, tuning_body("tune_crash", tuning_package, ["--crash"], maxTrials=10, maxParallelTrials=1,
                               maxFailedTrials=2))
    job = server.wait_state("tune_crash", TERMINAL, timeout=120)
    assert job["state"] == "FAILED"
    assert "maxFailedTrials" in job["errorMessage"] and "crashing on purpose" in job["errorMessage"]
    trials = job["trainingOutput"]["trials"]
    assert [t["state"] for t in trials] == ["FAILED", "FAILED"]
    assert job["trainingOutput"]["completedTrialCount"] == "0"


def test_trial_that_reports_nothing_fails_with_a_message(server: ServerProcess, tuning_package: Path) -> None:
    submit(server, tuning_body("tune_silent", tuning_package, ["--reporter", "none"], maxTrials=1))
    job = server.wait_state("tune_silent", TERMINAL, timeout=120)
    assert job["state"] == "FAILED"
    assert "without reporting the metric 'loss'" in job["errorMessage"]
    assert job["trainingOutput"]["trials"][0]["state"] == "FAILED"
    assert any("without reporting the metric 'loss'" in e["message"] for e in server.logs("tune_silent", "service"))


def test_metric_from_tensorflow_event_files(server: ServerProcess, tuning_package: Path, tmp_path: Path) -> None:
    submit(server, tuning_body("tune_events", tuning_package, ["--reporter", "events"], tmp_path / "out",
                               maxTrials=2, maxParallelTrials=2, algorithm="RANDOM_SEARCH"))
    job = server.wait_state("tune_events", TERMINAL, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    for trial in job["trainingOutput"]["trials"]:
        assert trial["finalMetric"]["trainingStep"] == "30"
        assert (tmp_path / "out" / trial["trialId"] / "eval").is_dir()


def test_resume_continues_the_study(server: ServerProcess, tuning_package: Path) -> None:
    submit(server, tuning_body("tune_first", tuning_package, [], maxTrials=2, maxParallelTrials=2))
    assert server.wait_state("tune_first", TERMINAL, timeout=120)["state"] == "SUCCEEDED"
    bad = tuning_body("tune_resume_bad", tuning_package, [], resumePreviousJobId="tune_first",
                      params=GRID_PARAMS)
    refused = server.api("POST", JOBS, json=bad)
    assert refused.status_code == 400
    assert "trainingInput.hyperparameters.resumePreviousJobId" in refused.json()["error"]["message"]
    missing = server.api("POST", JOBS, json=tuning_body("tune_resume_missing", tuning_package, [],
                                                        resumePreviousJobId="no_such_job"))
    assert missing.status_code == 400 and "no_such_job" in missing.json()["error"]["message"]

    submit(server, tuning_body("tune_second", tuning_package, [], maxTrials=3, maxParallelTrials=1,
                               resumePreviousJobId="tune_first"))
    job = server.wait_state("tune_second", TERMINAL, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    assert sorted(t["trialId"] for t in job["trainingOutput"]["trials"]) == ["3", "4", "5"]
    assert job["trainingOutput"]["completedTrialCount"] == "3"


def test_cancel_stops_every_trial(server: ServerProcess, tuning_package: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    submit(server, tuning_body("tune_cancel", tuning_package, ["--record", str(rec), "--steps", "1000",
                                                               "--sleep", "0.2"], maxTrials=6))
    deadline = time.monotonic() + 60
    while len(records(rec)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [r["pid"] for r in records(rec).values()]
    assert len(pids) == 2 and server.job("tune_cancel")["state"] == "RUNNING"
    assert server.api("POST", f"{JOBS}/tune_cancel:cancel", json={}).status_code == 200
    job = server.wait_state("tune_cancel", ("CANCELLED",), timeout=20)
    assert not any(_pid_alive(pid) for pid in pids)
    assert [t["state"] for t in job["trainingOutput"]["trials"]] == ["CANCELLED", "CANCELLED"]


def test_invalid_specs_are_refused_naming_the_field(server: ServerProcess, tuning_package: Path) -> None:
    cases = [
        ({"params": [{**PARAMS[0], "minValue": 2}]}, "trainingInput.hyperparameters.params[0].maxValue"),
        ({"algorithm": "GRID_SEARCH"}, "trainingInput.hyperparameters.params[0].type"),
        ({"params": [PARAMS[0], {**PARAMS[1], "minValue": 0}]}, "trainingInput.hyperparameters.params[1].minValue"),
        ({"goal": "BIGGER"}, "trainingInput.hyperparameters.goal"),
        ({"maxTrials": 0}, "trainingInput.hyperparameters.maxTrials"),
    ]
    for change, field in cases:
        response = server.api("POST", JOBS, json=tuning_body("tune_invalid", tuning_package, [], **change))
        assert response.status_code == 400, change
        assert response.json()["error"]["message"].startswith(f"Field: {field} Error:"), response.text
    assert server.api("GET", f"{JOBS}/tune_invalid").status_code == 404


def test_restart_resumes_the_tuning_job(server_factory: Any, tuning_package: Path, tmp_path: Path) -> None:
    server = server_factory()
    rec = tmp_path / "rec"
    submit(server, tuning_body("tune_restart", tuning_package, ["--record", str(rec), "--sleep", "0.5"],
                               maxTrials=4, maxParallelTrials=1))
    deadline = time.monotonic() + 60
    while len(records(rec)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill9()
    server.start()
    job = server.wait_state("tune_restart", TERMINAL, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    assert sorted(t["trialId"] for t in job["trainingOutput"]["trials"]) == ["1", "2", "3", "4"]
    assert job["trainingOutput"]["completedTrialCount"] == "4"


def test_tuning_on_postgresql(server_factory: Any, tuning_package: Path, fresh_postgres_db: str) -> None:
    server = server_factory(MLE_DATABASE_URL=fresh_postgres_db)
    submit(server, tuning_body("tune_pg", tuning_package, ["--reporter", "mlengine"], maxTrials=3))
    job = server.wait_state("tune_pg", TERMINAL, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    assert job["trainingOutput"]["completedTrialCount"] == "3"


def test_trial_that_cannot_start_ends_the_job_at_once(server: ServerProcess, tuning_package: Path) -> None:
    body = tuning_body("tune_nomodule", tuning_package, [], maxTrials=5)
    body["trainingInput"]["pythonModule"] = "trainer.missing"
    submit(server, body)
    job = server.wait_state("tune_nomodule", TERMINAL, timeout=120)
    assert job["state"] == "FAILED"
    assert "could not start" in job["errorMessage"] and "trainer.missing" in job["errorMessage"]
    assert len(job["trainingOutput"]["trials"]) <= 2  # the first pair, no more


def test_max_running_time_applies_to_the_whole_tuning_job(server: ServerProcess, tuning_package: Path) -> None:
    body = tuning_body("tune_timeout", tuning_package, ["--steps", "1000", "--sleep", "0.1"], maxTrials=4)
    body["trainingInput"]["scheduling"] = {"maxRunningTime": "3s"}
    submit(server, body)
    job = server.wait_state("tune_timeout", TERMINAL, timeout=60)
    assert job["state"] == "CANCELLED"
    assert "maxRunningTime" in job["errorMessage"]
    assert {t["state"] for t in job["trainingOutput"]["trials"]} == {"CANCELLED"}
