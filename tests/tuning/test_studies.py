"""Optuna studies in the metadata store's database (SQLite and PostgreSQL), samplers, pruner."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy import inspect, text

from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository
from mlengine.store.migrate import VERSION_TABLE
from mlengine.tuning.samplers import grid_points_started, make_pruner, make_sampler, n_startup_trials
from mlengine.tuning.spec import parse_hyperparameters
from mlengine.tuning.studies import StudyStore
from mlengine.tuning.trials import study_name

SPEC = parse_hyperparameters({"goal": "MINIMIZE", "maxTrials": 4, "params": [
    {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]})


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


def test_studies_share_the_database_and_survive_a_restart(url: str) -> None:
    db = open_database(url)
    repo = JobRepository(db)
    job = repo.create("p", "tune", kind="tuning", state="QUEUED", input={}, labels={})
    store = StudyStore(db)
    study = store.open(job, SPEC)
    with store.locked():
        trial = study.ask(fixed_distributions=SPEC.distributions())
        assert store.report(study, trial.number, {1: 0.5, 2: 0.25}) is False
        study.tell(trial.number, 0.25)
    store.close()
    db.dispose()

    db = open_database(url)  # migrations run again next to Optuna's tables
    tables = set(inspect(db.engine).get_table_names())
    assert {"jobs", "studies", "trials", VERSION_TABLE, "alembic_version"} <= tables
    job = JobRepository(db).update(job.id, lambda r: setattr(r, "kind_state", {**r.kind_state, "studyReady": True}))
    store = StudyStore(db)
    again = store.open(job, SPEC)
    assert [(t.number, t.value, t.intermediate_values) for t in again.trials] == [(0, 0.25, {1: 0.5, 2: 0.25})]
    # a resumed job's study starts with the finished trials of the previous one
    nxt = JobRepository(db).create("p", "tune2", kind="tuning", state="QUEUED", input={}, labels={})
    resumed = store.open(nxt, SPEC, previous=study_name(job))
    assert [t.value for t in resumed.trials] == [0.25]
    with store.locked():
        assert resumed.ask(fixed_distributions=SPEC.distributions()).number == 1
    store.close()
    db.dispose()


def test_legacy_version_table_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = open_database(url)
    with db.engine.begin() as conn:  # what databases created before the split look like
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": revision})
    db.dispose()
    db = open_database(url)
    with db.engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == revision
    assert "alembic_version" not in inspect(db.engine).get_table_names()
    StudyStore(db).storage  # noqa: B018 - Optuna now takes alembic_version for itself
    db.dispose()


def test_samplers_per_algorithm() -> None:
    assert isinstance(make_sampler(SPEC), optuna.samplers.TPESampler)
    random = parse_hyperparameters({"algorithm": "RANDOM_SEARCH", "params": [
        {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]})
    assert isinstance(make_sampler(random), optuna.samplers.RandomSampler)
    assert [n_startup_trials(n) for n in (1, 6, 30, 100)] == [3, 3, 5, 10]
    assert isinstance(make_pruner(SPEC), optuna.pruners.NopPruner)


def test_grid_sampler_covers_the_grid_without_stopping_the_study() -> None:
    grid = parse_hyperparameters({"algorithm": "GRID_SEARCH", "params": [
        {"parameterName": "n", "type": "INTEGER", "minValue": 1, "maxValue": 3},
        {"parameterName": "d", "type": "DISCRETE", "discreteValues": [0.5, 2]}]})
    study = optuna.create_study(sampler=make_sampler(grid))
    seen = set()
    for _ in range(grid.grid_size()):
        trial = study.ask(fixed_distributions=grid.distributions())
        seen.add(tuple(grid.external(trial.params).items()))
        study.tell(trial.number, 1.0)  # GridSampler.after_trial would call study.stop() and raise
    assert len(seen) == 6 and grid_points_started(study) == 6


def test_pruner_stops_only_a_clearly_bad_curve() -> None:
    early = parse_hyperparameters({"goal": "MINIMIZE", "enableTrialEarlyStopping": True, "params": [
        {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]})
    study = optuna.create_study(direction="minimize", pruner=make_pruner(early))
    for final in (1.0, 1.1, 1.2):
        trial = study.ask(fixed_distributions=early.distributions())
        for step in (1, 2, 3):
            trial.report(final + 1 / step, step)
        study.tell(trial, final)
    fine = study.ask(fixed_distributions=early.distributions())
    fine.report(2.05, 1)
    assert not fine.should_prune()  # in the middle of the pack: keeps running
    bad = study.ask(fixed_distributions=early.distributions())
    bad.report(100.0, 1)
    assert bad.should_prune()


def test_gaussian_process_sampler_needs_torch() -> None:
    import importlib.util

    from mlengine.errors import MLEngineError

    if importlib.util.find_spec("torch") is None:
        with pytest.raises(MLEngineError, match="MLE_TUNING_BAYESIAN=gp needs torch"):
            make_sampler(SPEC, bayesian="gp")
    else:
        assert isinstance(make_sampler(SPEC, bayesian="gp"), optuna.samplers.GPSampler)
    with pytest.raises(MLEngineError, match="is not one of tpe, gp"):
        make_sampler(SPEC, bayesian="cmaes")
