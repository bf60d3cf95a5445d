"""Models, versions and operations in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.store.database import open_database
from mlengine.store.operations import OperationRepository
from mlengine.store.serving import ServingRepository


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_db")
    database = open_database(url)
    yield database
    database.dispose()


@pytest.fixture
def repo(database):
    return ServingRepository(database)


def test_models_versions_operations_roundtrip(repo: ServingRepository) -> None:
    model = repo.create_model("p", "m", description="d", labels={"a": "b"}, spec={})
    with pytest.raises(MLEngineError) as info:
        repo.create_model("p", "m", description="", labels={}, spec={})
    assert info.value.code is Code.ALREADY_EXISTS
    v1, default1 = repo.create_version(model, "v1", spec={"x": 1}, internal={})
    v2, default2 = repo.create_version(model, "v2", spec={}, internal={})
    assert (default1, default2) == (True, False)
    assert repo.get_model("p", "m").default_version == "v1"
    with pytest.raises(MLEngineError):
        repo.create_version(model, "v1", spec={}, internal={})
    updated = repo.update_version(v2.id, lambda row: setattr(row, "state", "READY"))
    assert updated.state == "READY" and updated.version == 2
    page, token = repo.list_versions(model, lambda _r: True, 1, None)
    assert [v.name for v in page] == ["v1"] and token
    page, token = repo.list_versions(model, lambda _r: True, 1, token)
    assert [v.name for v in page] == ["v2"] and token is None
    ops = OperationRepository(repo.db)
    op = ops.create("p", "create_m_v1-1", "CREATE_VERSION", "projects/p/models/m/versions/v1", {"k": 1})
    with pytest.raises(MLEngineError) as info:
        ops.create("p", "create_m_v1-1", "CREATE_VERSION", "projects/p/models/m/versions/v1", {})
    assert info.value.code is Code.ALREADY_EXISTS
    assert [o.name for o in ops.pending()] == ["create_m_v1-1"]
    assert [o.name for o in ops.pending("CREATE_VERSION", "projects/p/models/m/versions/v1")] == ["create_m_v1-1"]
    assert ops.pending("DELETE_VERSION") == [] and ops.pending(target="projects/p/models/m") == []
    ops.update(op.id, lambda row: setattr(row, "handle", {"pid": 1}))
    assert ops.get("p", "create_m_v1-1").handle == {"pid": 1}
    finished = ops.finish(op.id, error={"code": 1, "message": "cancelled"})
    assert finished is not None and finished.done and finished.end_time is not None
    assert ops.finish(op.id, response={"x": 1}) is None  # the first writer wins
    assert ops.get("p", "create_m_v1-1").error == {"code": 1, "message": "cancelled"}
    assert ops.pending() == []

    def refuse(_model, versions):
        if versions:
            raise MLEngineError(Code.FAILED_PRECONDITION, "has versions")

    with pytest.raises(MLEngineError):
        repo.delete_model(model.id, refuse)
    repo.delete_version_row(v1.id)
    repo.delete_version_row(v2.id)
    repo.delete_model(model.id, refuse)
    with pytest.raises(MLEngineError) as info:
        repo.get_model("p", "m")
    assert info.value.code is Code.NOT_FOUND


def test_migration_0006_moves_operations_to_kind_and_target(tmp_path: Path) -> None:
    """Rows written by the 0004 schema come out with kind, target and metadata.modelName."""
    import json

    from sqlalchemy import create_engine, text

    from mlengine.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        for i, (kind, version) in enumerate([("CREATE_VERSION", "v1"), ("UPDATE_MODEL", None)]):
            conn.execute(text(
                "INSERT INTO operations (project, name, operation_type, model_name, version_name, done, "
                "cancel_requested, metadata, create_time) VALUES ('p', :name, :kind, 'm', :version, :done, 0, "
                ":meta, '2024-01-01 00:00:00')"), {"name": f"op{i}", "kind": kind, "version": version,
                                                   "done": i, "meta": json.dumps({"labels": {"a": "b"}})})
    engine.dispose()
    database = open_database(url)
    ops = OperationRepository(database)
    created, updated = ops.get("p", "op0"), ops.get("p", "op1")
    assert (created.kind, created.target) == ("CREATE_VERSION", "projects/p/models/m/versions/v1")
    assert (updated.kind, updated.target) == ("UPDATE_MODEL", "projects/p/models/m")
    assert created.meta == {"labels": {"a": "b"}, "modelName": "projects/p/models/m"}
    assert created.handle == {} and [o.name for o in ops.pending()] == ["op0"]
    database.dispose()
