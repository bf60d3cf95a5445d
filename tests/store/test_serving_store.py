"""Models, versions and operations in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.store.database import open_database
from mlengine.store.serving import ServingRepository


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_db")
    database = open_database(url)
    yield ServingRepository(database)
    database.dispose()


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
    op = repo.create_operation("p", "create_m_v1-1", "CREATE_VERSION", "m", "v1", {"k": 1})
    assert [o.name for o in repo.pending_operations()] == ["create_m_v1-1"]
    repo.update_operation(op.id, lambda row: setattr(row, "done", True))
    assert repo.pending_operations() == []

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
