"""The services table (migration 0005) and its repository, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.store.database import Database, open_database
from mlengine.store.services import ServiceRepository, ServiceRow


@pytest.fixture
def repo(database_url: str) -> Iterator[ServiceRepository]:
    db: Database = open_database(database_url)
    yield ServiceRepository(db)
    db.dispose()


def test_create_get_list_update_delete(repo: ServiceRepository) -> None:
    for name in ("b", "a", "c"):
        repo.create("p", name, kind="toy", spec={"x": 1}, state="STARTING")
    repo.create("q", "a", kind="toy", spec={}, state="STARTING")  # names are unique per project only
    with pytest.raises(MLEngineError) as info:
        repo.create("p", "a", kind="toy", spec={}, state="STARTING")
    assert info.value.code is Code.ALREADY_EXISTS and "projects/p/services/a" in info.value.message

    row = repo.get("p", "a")
    assert (row.kind, row.spec, row.state, row.restarts, row.handle, row.version) == ("toy", {"x": 1}, "STARTING",
                                                                                       0, {}, 1)
    page, token = repo.list_page("p", 2, None)
    assert [r.name for r in page] == ["a", "b"] and token
    rest, token = repo.list_page("p", 2, token)
    assert [r.name for r in rest] == ["c"] and token is None

    def run(r: ServiceRow) -> None:
        r.state = "RUNNING"
        r.handle = {"pid": 1, "port": 2}

    updated = repo.update(row.id, run)
    assert updated.version == 2 and repo.get("p", "a").handle == {"pid": 1, "port": 2}
    assert repo.compare_and_set(row.id, lambda r: False) is None
    assert repo.get("p", "a").version == 2
    repo.delete(row.id)
    with pytest.raises(MLEngineError) as info:
        repo.get("p", "a")
    assert info.value.code is Code.NOT_FOUND
    assert [r.name for r in repo.all()] == ["b", "c", "a"]
