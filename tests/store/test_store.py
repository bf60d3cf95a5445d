"""Store conformance suite: every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.store.database import open_database
from mlengine.store.jobs import JobRepository, etag_of
from mlengine.store.models import ReplicaRow
from mlengine.store.tokens import TokenRepository


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_db")
    database = open_database(url)
    yield database
    database.dispose()


def make_job(repo: JobRepository, job_id: str, state: str = "QUEUED", project: str = "p"):
    return repo.create(project, job_id, kind="training", state=state, input={"pythonModule": "m"},
                       labels={"team": "ml"})


def test_migrations_are_idempotent(db) -> None:
    db.migrate()
    db.migrate()
    assert make_job(JobRepository(db), "j1").id


def test_create_get_roundtrip(db) -> None:
    repo = JobRepository(db)
    row = make_job(repo, "job_1")
    got = repo.get("p", "job_1")
    assert got.id == row.id
    assert got.input == {"pythonModule": "m"}
    assert got.labels == {"team": "ml"}
    assert got.create_time.tzinfo is not None or got.create_time is not None


def test_duplicate_id_is_already_exists(db) -> None:
    repo = JobRepository(db)
    make_job(repo, "dup")
    with pytest.raises(MLEngineError) as info:
        make_job(repo, "dup")
    assert info.value.code is Code.ALREADY_EXISTS
    # the same id in another project is fine
    make_job(repo, "dup", project="other")


def test_unknown_job_is_not_found(db) -> None:
    with pytest.raises(MLEngineError) as info:
        JobRepository(db).get("p", "nope")
    assert info.value.code is Code.NOT_FOUND
    assert "nope" in info.value.message


def test_update_bumps_etag_and_persists(db) -> None:
    repo = JobRepository(db)
    row = make_job(repo, "j")
    before = etag_of(row)
    moved = repo.update(row.id, lambda r: setattr(r, "state", "RUNNING"))
    assert etag_of(moved) == before, "scheduler progress must not change the etag"

    def relabel(r) -> None:
        r.labels = {"a": "b"}
        r.labels_version = 1

    updated = repo.update(row.id, relabel)
    assert etag_of(updated) != before
    assert repo.get("p", "j").labels == {"a": "b"}


def test_pagination_newest_first_with_filter(db) -> None:
    repo = JobRepository(db)
    for i in range(7):
        make_job(repo, f"job_{i}", state="RUNNING" if i % 2 else "QUEUED")
    page, token = repo.list_page("p", lambda r: r.state == "QUEUED", 2, None)
    assert [r.job_id for r in page] == ["job_6", "job_4"]
    assert token
    page2, token2 = repo.list_page("p", lambda r: r.state == "QUEUED", 2, token)
    assert [r.job_id for r in page2] == ["job_2", "job_0"]
    assert token2 is None
    with pytest.raises(MLEngineError) as info:
        repo.list_page("p", lambda r: True, 2, "garbage!")
    assert "pageToken" in info.value.message


def test_queue_position(db) -> None:
    repo = JobRepository(db)
    a, b, c = (make_job(repo, n) for n in ("a", "b", "c"))
    repo.update(a.id, lambda r: setattr(r, "state", "RUNNING"))
    assert repo.queue_position(repo.get("p", "b")) == 1
    assert repo.queue_position(repo.get("p", "c")) == 2
    assert repo.queue_position(repo.get("p", "a")) == 0


def test_replicas(db) -> None:
    repo = JobRepository(db)
    job = make_job(repo, "j")
    rep = repo.add_replica(ReplicaRow(job_pk=job.id, task_name="master-replica-0", task_type="master",
                                      task_index=0, executor="local", state="RUNNING",
                                      handle={"pid": 1}, message=""))
    repo.update_replica(rep.id, state="EXITED", exit_code=0)
    [got] = repo.replicas(job.id)
    assert got.state == "EXITED" and got.exit_code == 0 and got.handle == {"pid": 1}


def test_concurrent_updates_are_serialized(db) -> None:
    repo = JobRepository(db)
    job = make_job(repo, "counter")
    repo.update(job.id, lambda r: setattr(r, "kind_state", {"n": 0}))

    def bump() -> None:
        for _ in range(10):
            repo.update(job.id, lambda r: setattr(r, "kind_state", {"n": r.kind_state["n"] + 1}))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repo.get("p", "counter").kind_state["n"] == 40


def test_tokens(db) -> None:
    repo = TokenRepository(db)
    row, secret = repo.create("alice")
    assert row.principal == "user:alice" and row.groups == []
    assert row.token_sha256 != secret and secret not in row.token_sha256
    assert repo.find(secret).name == "alice"
    assert repo.find(secret + "x") is None
    with pytest.raises(MLEngineError) as info:
        repo.create("alice", "user:someone-else")
    assert info.value.code is Code.ALREADY_EXISTS
    repo.delete("alice")
    assert repo.find(secret) is None
