"""The tuner (the tuning kind, a controller) against the fake executor and a temporary SQLite:
trials are created as jobs of the trial kind, judged from their metric files, and the tuning
job ends, is cancelled, or passes its deadline through the scheduler's one path."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.fakes import FakeExecutor

from mlengine.config import load_settings
from mlengine.jobs import lifecycle as states
from mlengine.jobs.kinds import KindContext, KindRegistry
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.scheduler import Scheduler
from mlengine.jobs.service import JobService
from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow
from mlengine.training.kind import TrainingKind
from mlengine.tuning.kind import TrialKind, TuningKind


class StubEnvironment:
    """What preparing a trial yields, without packages: the test interpreter as it is."""

    key = "stub"
    python = "/usr/bin/python3"

    def env_vars(self) -> dict[str, str]:
        return {}


class StubTraining(TrainingKind):
    def prepare(self, job: JobRow, paths: JobPaths, log: Any) -> Any:
        paths.metric_file.parent.mkdir(parents=True, exist_ok=True)
        return StubEnvironment()


class StubTrial(TrialKind, StubTraining):
    pass


class Harness:
    def __init__(self, home: Path) -> None:
        self.settings = load_settings(home=home, cancel_grace_seconds=0.5)
        self.db = open_database(self.settings.resolved_database_url)
        self.repo = JobRepository(self.db)
        self.executor = FakeExecutor(cpus=16)
        context = KindContext(self.settings, self.repo, self.db, lambda: None)
        training = StubTraining(context, None)
        self.kinds = KindRegistry([TuningKind(context, training), training, StubTrial(context, None)])
        self.scheduler = Scheduler(self.settings, self.repo, self.executor, self.kinds)
        self.service = JobService(self.settings, self.repo, self.kinds, lambda: None)
        package = home.parent / "trainer-0.1.tar.gz"  # outside MLE_HOME, as the URI policy wants
        import io
        import tarfile

        with tarfile.open(package, "w:gz") as tar:
            info = tarfile.TarInfo("trainer-0.1/setup.py")
            info.size = 0
            tar.addfile(info, io.BytesIO(b""))
        self.package = str(package)

    def submit(self, job_id: str, max_trials: int = 3, parallel: int = 1, **scheduling: str) -> None:
        ti: dict[str, Any] = {
            "packageUris": [self.package], "pythonModule": "trainer.task",
            "hyperparameters": {"goal": "MAXIMIZE", "maxTrials": max_trials, "maxParallelTrials": parallel,
                                "hyperparameterMetricTag": "accuracy", "algorithm": "RANDOM_SEARCH",
                                "params": [{"parameterName": "lr", "type": "DOUBLE", "minValue": 0.01,
                                            "maxValue": 0.1}]}}
        if scheduling:
            ti["scheduling"] = scheduling
        self.service.create("p", {"jobId": job_id, "trainingInput": ti})

    def until(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.scheduler.tick()
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError("condition not reached; jobs: " + ", ".join(
            f"{j.job_id}={j.state}" for j in self.repo.in_states(states.ACTIVE)))

    def trials(self, job_id: str) -> list[JobRow]:
        return self.repo.children(self.repo.get("p", job_id))

    def running_trial(self, job_id: str) -> JobRow:
        self.until(lambda: any(t.state == states.RUNNING for t in self.trials(job_id)))
        return next(t for t in self.trials(job_id) if t.state == states.RUNNING)

    def finish_trial(self, trial: JobRow, value: float | None, code: int = 0) -> None:
        if value is not None:
            metric = JobPaths.of(self.settings, "p", trial.job_id).metric_file
            report = {"timestamp": time.time(), "accuracy": str(value), "global_step": "10"}
            metric.write_text(json.dumps(report) + "\n")
        pid = int(self.repo.replicas(trial.id)[0].handle["pid"])
        self.executor.exit(pid, code)
        self.until(lambda: "outcome" in self.repo.get_by_pk(trial.id).kind_state)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "home")
    yield harness
    harness.scheduler.stop()
    harness.db.dispose()


def test_trials_run_one_by_one_and_the_best_is_first(h: Harness) -> None:
    h.submit("tune", max_trials=3)
    values = [0.5, 0.9, 0.7]
    for value in values:
        trial = h.running_trial("tune")
        assert trial.kind == "trial"
        assert any(a.startswith("--lr=") for a in h.executor.launches[-1].argv)
        assert json.loads(h.executor.launches[-1].env["TF_CONFIG"])["task"]["trial"] == trial.kind_state["trialId"]
        h.finish_trial(trial, value)
    h.until(lambda: h.repo.get("p", "tune").state in states.TERMINAL)
    job = h.service.get("p", "tune")
    assert job["state"] == "SUCCEEDED"
    output = job["trainingOutput"]
    assert output["completedTrialCount"] == "3" and output["isHyperparameterTuningJob"]
    assert [t["finalMetric"]["objectiveValue"] for t in output["trials"]][0] == 0.9
    listed = [j["jobId"] for j in h.service.list("p", None, None, None)["jobs"]]
    assert listed == ["tune"]  # trials are reached through their tuning job


def test_a_trial_without_a_metric_fails_and_the_limit_ends_the_job(h: Harness) -> None:
    h.submit("tune", max_trials=4)
    for _ in range(2):
        h.finish_trial(h.running_trial("tune"), None)
    h.until(lambda: h.repo.get("p", "tune").state in states.TERMINAL or len(h.trials("tune")) > 2)
    outcomes = [t.kind_state["outcome"]["state"] for t in h.trials("tune") if "outcome" in t.kind_state]
    assert outcomes[:2] == ["FAILED", "FAILED"]


def test_cancel_stops_running_trials_then_the_job(h: Harness) -> None:
    h.submit("tune", max_trials=5, parallel=2)
    h.until(lambda: sum(t.state == states.RUNNING for t in h.trials("tune")) == 2)
    h.service.cancel("p", "tune")
    h.until(lambda: h.repo.get("p", "tune").state in states.TERMINAL)
    assert h.repo.get("p", "tune").state == states.CANCELLED
    assert all(t.state in states.TERMINAL for t in h.trials("tune"))
    assert {sig for _pid, sig in h.executor.signals} >= {15}


def test_max_running_time_cancels_the_tuning_job_through_the_scheduler(h: Harness) -> None:
    h.submit("tune", max_trials=5, maxRunningTime="0.5s")
    h.running_trial("tune")
    h.until(lambda: h.repo.get("p", "tune").state in states.TERMINAL)
    job = h.repo.get("p", "tune")
    assert job.state == states.CANCELLED and "maxRunningTime (0.5s)" in job.error_message
    assert all(t.state in states.TERMINAL for t in h.trials("tune"))
