"""The job kind conformance suite (:mod:`mlengine.testing.job_kinds`) run by every kind:
training, tuning (a controller), and the toy kind only the tests define."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.toy_kinds import SleepKind

from mlengine.config import load_settings
from mlengine.core.environments import EnvironmentCache
from mlengine.jobs.kinds import JobKind, KindContext
from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository
from mlengine.testing.job_kinds import JobKindConformance
from mlengine.training.kind import TrainingKind
from mlengine.tuning.kind import TuningKind

HYPERPARAMETERS = {"goal": "MINIMIZE", "maxTrials": 2, "hyperparameterMetricTag": "loss",
                   "params": [{"parameterName": "lr", "type": "DOUBLE", "minValue": 0.01, "maxValue": 0.1}]}


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindContext]:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home)
    db = open_database(settings.resolved_database_url)
    yield KindContext(settings, JobRepository(db), db, lambda: None)
    db.dispose()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal sdist the training kind can open and check."""
    path = tmp_path_factory.mktemp("pkg") / "trainer-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {"trainer-0.1/setup.py": "from setuptools import setup\nsetup(name='trainer')\n",
                           "trainer-0.1/PKG-INFO": "Name: trainer\nVersion: 0.1\n",
                           "trainer-0.1/trainer/__init__.py": "", "trainer-0.1/trainer/task.py": ""}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def training_input(package: Path, **extra: Any) -> dict[str, Any]:
    return {"packageUris": [str(package)], "pythonModule": "trainer.task", **extra}


class TestSleepKind(JobKindConformance):
    @pytest.fixture
    def kind(self) -> JobKind:
        return SleepKind()

    @pytest.fixture
    def valid_body(self) -> dict[str, Any]:
        return {"jobId": "nap", "sleepInput": {"seconds": 1}, "labels": {"team": "ml"}}

    @pytest.fixture
    def invalid_bodies(self) -> list[tuple[dict[str, Any], str]]:
        return [({"jobId": "nap", "sleepInput": {"seconds": -1}}, "sleepInput.seconds"),
                ({"jobId": "1bad", "sleepInput": {"seconds": 1}}, "jobId"),
                ({"jobId": "nap", "sleepInput": {"seconds": 1}, "labels": {"A": "b"}}, "labels.A")]


class TestTrainingKind(JobKindConformance):
    @pytest.fixture
    def kind(self, context: KindContext) -> JobKind:
        return TrainingKind(context, EnvironmentCache(context.settings.envs_dir))

    @pytest.fixture
    def valid_body(self, package: Path) -> dict[str, Any]:
        return {"jobId": "train", "trainingInput": training_input(
            package, scaleTier="CUSTOM", masterType="standard", workerType="standard", workerCount=2,
            parameterServerType="standard", parameterServerCount=1, scheduling={"maxRunningTime": "60s"})}

    @pytest.fixture
    def invalid_bodies(self, package: Path) -> list[tuple[dict[str, Any], str]]:
        return [({"jobId": "t", "trainingInput": training_input(package, pythonModule="")},
                 "trainingInput.pythonModule"),
                ({"jobId": "t", "trainingInput": {**training_input(package), "packageUris": ["/nope.tar.gz"]}},
                 "trainingInput.packageUris[0]"),
                ({"jobId": "t", "trainingInput": training_input(package, scaleTier="CUSTOM", masterType="huge")},
                 "trainingInput.masterType"),
                ({"jobId": "t", "trainingInput": training_input(package, scheduling={"maxRunningTime": "1h"})},
                 "trainingInput.scheduling.maxRunningTime")]

    def test_plan_is_the_cluster(self, kind: JobKind, valid_body: dict[str, Any]) -> None:
        from mlengine.testing.job_kinds import job_row

        plan = kind.plan(job_row(kind, kind.validate("p", valid_body)))
        assert [r.task_name for r in plan] == ["master-replica-0", "worker-replica-0", "worker-replica-1",
                                               "ps-replica-0"]


class TestTuningKind(JobKindConformance):
    @pytest.fixture
    def kind(self, context: KindContext) -> JobKind:
        training = TrainingKind(context, EnvironmentCache(context.settings.envs_dir))
        return TuningKind(context, training)

    @pytest.fixture
    def valid_body(self, package: Path) -> dict[str, Any]:
        return {"jobId": "tune", "trainingInput": training_input(package, hyperparameters=HYPERPARAMETERS)}

    @pytest.fixture
    def invalid_bodies(self, package: Path) -> list[tuple[dict[str, Any], str]]:
        bad = {**HYPERPARAMETERS, "maxTrials": 0}
        return [({"jobId": "t", "trainingInput": training_input(package, hyperparameters=bad)},
                 "trainingInput.hyperparameters.maxTrials")]

    def test_training_kind_leaves_tuning_jobs_to_it(self, context: KindContext, valid_body: dict[str, Any]) -> None:
        training = TrainingKind(context, EnvironmentCache(context.settings.envs_dir))
        assert not training.accepts(valid_body)
