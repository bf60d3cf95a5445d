"""The preprocessing kind runs the job kind conformance suite (:mod:`mlengine.testing.job_kinds`),
with a DirectRunner body and a DaskRunner body (driver + workers), and records the transform a
succeeded pipeline wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.test_job_kinds import package  # noqa: F401 - the fixture: a minimal sdist

from mlengine.config import load_settings
from mlengine.core.environments import EnvironmentCache
from mlengine.jobs.executors import ReplicaStatus
from mlengine.jobs.kinds import JobKind, KindContext, ReplicaResult
from mlengine.preprocessing.kind import PreprocessingKind
from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository
from mlengine.testing.job_kinds import JobKindConformance, job_row


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindContext]:
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(home=home, sandbox="off")
    db = open_database(settings.resolved_database_url)
    yield KindContext(settings, JobRepository(db), db, lambda: None)
    db.dispose()


def body(package: Path, **extra: Any) -> dict[str, Any]:  # noqa: F811
    return {"jobId": "prep", "preprocessingInput": {"packageUris": [str(package)],
                                                    "pythonModule": "trainer.task", **extra}}


class TestDirectRunner(JobKindConformance):
    @pytest.fixture
    def kind(self, context: KindContext) -> JobKind:
        return PreprocessingKind(context, EnvironmentCache(context.settings.envs_dir))

    @pytest.fixture
    def valid_body(self, package: Path) -> dict[str, Any]:  # noqa: F811
        return body(package, workerCount="2", scheduling={"maxRunningTime": "60s"})

    @pytest.fixture
    def invalid_bodies(self, package: Path) -> list[tuple[dict[str, Any], str]]:  # noqa: F811
        return [(body(package, pythonModule=""), "preprocessingInput.pythonModule"),
                ({"jobId": "p", "preprocessingInput": {**body(package)["preprocessingInput"],
                                                       "packageUris": ["/nope.tar.gz"]}},
                 "preprocessingInput.packageUris[0]"),
                (body(package, runner="FlinkRunner"), "preprocessingInput.runner"),
                ({**body(package), "jobId": "1bad"}, "jobId")]


class TestDaskRunner(TestDirectRunner):
    @pytest.fixture
    def valid_body(self, package: Path) -> dict[str, Any]:  # noqa: F811
        return body(package, runner="DaskRunner", workerCount="2")

    def test_workers_alone_do_not_end_the_job(self, kind: JobKind, valid_body: dict[str, Any]) -> None:
        row = job_row(kind, kind.validate("p", valid_body))
        plan = kind.plan(row)
        workers_done = [ReplicaResult(plan[0].task_name, plan[0].task_type, ReplicaStatus("running"))] + [
            ReplicaResult(r.task_name, r.task_type, ReplicaStatus("exited", 0)) for r in plan[1:]]
        assert kind.outcome(row, workers_done) is None


def test_success_records_the_transform(context: KindContext, package: Path, tmp_path: Path) -> None:  # noqa: F811
    kind = PreprocessingKind(context, EnvironmentCache(context.settings.envs_dir))
    submission = kind.validate("p", body(package, jobDir=str(tmp_path)))
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "transform.json").write_text(json.dumps({"fingerprint": "f00d"}))
    row = context.repo.create("p", submission.job_id, kind=kind.name, state="RUNNING", input=submission.input,
                              labels={}, output=submission.output)
    done = [ReplicaResult("driver-replica-0", "driver", ReplicaStatus("exited", 0))]
    outcome = kind.outcome(row, done)
    assert outcome is not None and outcome.state == "SUCCEEDED"
    output = context.repo.get("p", "prep").output
    assert output["transformFingerprint"] == "f00d" and output["runner"] == "DirectRunner"
