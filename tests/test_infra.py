"""The test infrastructure itself: a real PostgreSQL server and an isolated MLE_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa


def _roundtrip(url: str) -> list[tuple[int, str]]:
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        table = sa.Table(
            "infra_check",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "name": "alpha"}, {"id": 2, "name": "béta"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.id, table.c.name).order_by(table.c.id)).all()
        meta.drop_all(engine)
        return [(r.id, r.name) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_url_is_a_real_postgres_server(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert postgres_url.endswith("/mlengine_test")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert database == "mlengine_test"
    assert int(str(version).split(".")[0]) >= 12


@pytest.mark.postgres
def test_postgres_create_insert_select(postgres_url: str) -> None:
    assert _roundtrip(postgres_url) == [(1, "alpha"), (2, "béta")]


@pytest.mark.postgres
def test_fresh_postgres_db_is_empty_and_separate(postgres_url: str, fresh_postgres_db: str) -> None:
    assert fresh_postgres_db != postgres_url
    engine = sa.create_engine(fresh_postgres_db)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.connect() as conn:  # left open on purpose: the drop must still work
            conn.execute(sa.text("CREATE TABLE left_behind (x int)"))
            conn.commit()
            assert _roundtrip(fresh_postgres_db) == [(1, "alpha"), (2, "béta")]
    finally:
        engine.dispose()


def test_database_url_both_backends(database_url: str) -> None:
    assert database_url.split(":")[0] in {"sqlite", "postgresql+psycopg"}
    assert _roundtrip(database_url) == [(1, "alpha"), (2, "béta")]


@pytest.mark.parametrize("attempt", [1, 2])
def test_mle_home_is_fresh_short_and_clean(mle_home: Path, monkeypatch: pytest.MonkeyPatch, attempt: int) -> None:
    assert os.environ["MLE_HOME"] == str(mle_home)
    assert mle_home.is_dir() and list(mle_home.iterdir()) == []
    # Room for a socket path like MLE_HOME/run/server.sock under the 108-byte limit.
    assert len(str(mle_home)) < 40
    for name in ("MLE_API_URL", "MLE_TOKEN", "MLE_DATABASE_URL", "MLE_PROJECT"):
        assert name not in os.environ
    (mle_home / f"marker-{attempt}").write_text("x")
