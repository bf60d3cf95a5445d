"""Migration 0004 moves jobs stored by earlier versions (training, tuning, trials) to the
generic columns, on SQLite and PostgreSQL, and the job service renders them as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from mlengine.config import load_settings
from mlengine.jobs.kinds import KindContext
from mlengine.jobs.scheduling import SchedulingState
from mlengine.jobs.service import JobService
from mlengine.store.database import Database
from mlengine.store.jobs import JobRepository
from mlengine.store.migrate import upgrade

OLD_JOBS = [
    # (job_id, state, training_input, training_output, internal)
    ("plain", "RUNNING", {"pythonModule": "trainer.task", "packageUris": ["/p.tar.gz"]}, {},
     {"maxRunningSeconds": 60.0, "demand": {"cpus": 1, "memoryGb": 0, "gpus": 0}, "placement": {"x": 1},
      "labelsVersion": 2, "cancelRequestedAt": 5.0}),
    ("tune", "RUNNING", {"pythonModule": "trainer.task", "hyperparameters": {"goal": "MAXIMIZE"}},
     {"completedTrialCount": "1"}, {"tuning": True, "studyReady": True, "maxWaitSeconds": 30.0}),
    ("tune/trials/1", "SUCCEEDED", {"pythonModule": "trainer.task"}, {},
     {"parentJobPk": 2, "trialId": "1", "trialNumber": 0, "hyperparameters": {"lr": "0.1"},
      "outcome": {"state": "SUCCEEDED"}}),
    ("legacy", "RUNNING", {"pythonModule": "m"}, {}, {"slots": 3}),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_db")
    db = Database(url)
    upgrade(db.engine, "0003")
    with db.engine.begin() as conn:
        for job_id, state, ti, output, internal in OLD_JOBS:
            conn.execute(text(
                "INSERT INTO jobs (project, job_id, state, create_time, error_message, training_input, "
                "training_output, labels, internal, version) VALUES ('p', :job_id, :state, CURRENT_TIMESTAMP, '', "
                ":ti, :out, '{}', :internal, 1)"),
                {"job_id": job_id, "state": state, "ti": json.dumps(ti), "out": json.dumps(output),
                 "internal": json.dumps(internal)})
    return db


def test_old_rows_move_to_the_generic_columns(old_database: Database, tmp_path: Path) -> None:
    old_database.migrate()
    repo = JobRepository(old_database)
    plain = repo.get("p", "plain")
    assert plain.kind == "training" and plain.input["pythonModule"] == "trainer.task"
    sched = SchedulingState.of(plain.scheduling)
    assert (sched.max_running_seconds, sched.demand, sched.placement) == (60.0, {"cpus": 1, "memoryGb": 0,
                                                                                  "gpus": 0}, {"x": 1})
    assert plain.labels_version == 2 and "cancelRequestedAt" not in plain.scheduling
    tune = repo.get("p", "tune")
    assert tune.kind == "tuning" and tune.kind_state == {"studyReady": True}
    assert tune.output == {"completedTrialCount": "1"}
    assert SchedulingState.of(tune.scheduling).max_wait_seconds == 30.0
    trial = repo.get("p", "tune/trials/1")
    assert trial.kind == "trial" and trial.parent_pk == tune.id
    assert trial.kind_state["hyperparameters"] == {"lr": "0.1"} and "parentJobPk" not in trial.kind_state
    assert [c.job_id for c in repo.children(tune)] == ["tune/trials/1"]
    assert repo.get("p", "legacy").scheduling["demand"]["cpus"] == 3.0

    # The API renders old jobs as before: trainingInput/trainingOutput, trials not listed.
    from mlengine.api.server import build_kinds
    from mlengine.core.environments import EnvironmentCache

    settings = load_settings(home=tmp_path / "home")
    kinds = build_kinds(settings, KindContext(settings, repo, old_database, lambda: None),
                        EnvironmentCache(settings.envs_dir))
    service = JobService(settings, repo, kinds, lambda: None)
    listed = service.list("p", None, None, None)["jobs"]
    assert sorted(j["jobId"] for j in listed) == ["legacy", "plain", "tune"]
    tune_json = service.get("p", "tune")
    assert tune_json["trainingInput"]["hyperparameters"] == {"goal": "MAXIMIZE"}
    assert tune_json["trainingOutput"] == {"completedTrialCount": "1"}
    old_database.migrate()  # idempotent
    old_database.dispose()
