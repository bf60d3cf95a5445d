"""Migration 0007 (IAM) merges the two heads and moves every token's role into a binding of the
server-wide policy, on SQLite and PostgreSQL; downgrading gives the roles back."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from mlengine.core.iam import SERVER
from mlengine.store.database import Database
from mlengine.store.iam import PolicyStore
from mlengine.store.migrate import alembic_config, upgrade
from mlengine.store.tokens import TokenRepository, digest

OLD_TOKENS = [("admin", "admin"), ("ann", "editor"), ("bob", "viewer"), ("carl", "editor")]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_db")
    db = Database(url)
    upgrade(db.engine, "0005")
    upgrade(db.engine, "0006")  # both heads, as a server before IAM left them
    with db.engine.begin() as conn:
        for name, role in OLD_TOKENS:
            conn.execute(text("INSERT INTO tokens (name, role, token_sha256, create_time) "
                              "VALUES (:name, :role, :sha, CURRENT_TIMESTAMP)"),
                         {"name": name, "role": role, "sha": digest(f"secret-{name}")})
    return db


def test_roles_become_server_bindings_and_come_back(old_database: Database) -> None:
    old_database.migrate()
    with old_database.engine.connect() as conn:
        heads = sorted(conn.execute(text("SELECT version_num FROM mlengine_alembic_version")).scalars())
    assert len(heads) == 1 and heads[0] >= "0007"  # one head again (later migrations may follow)
    assert "role" not in {c["name"] for c in inspect(old_database.engine).get_columns("tokens")}

    tokens = TokenRepository(old_database)
    found = tokens.find("secret-ann")
    assert found is not None and (found.name, found.principal, found.groups, found.job_pk) == (
        "ann", "user:ann", [], None)
    policy = PolicyStore(old_database).get(SERVER)
    assert policy.revision == 1
    assert {b.role: b.members for b in policy.bindings} == {
        "roles/ml.admin": ("user:admin",),
        "roles/ml.developer": ("user:ann", "user:carl"),
        "roles/ml.viewer": ("user:bob",),
    }
    tokens.create("job-7", "serviceAccount:job-x@p.iam.mlengine", job_pk=7)  # dropped by a downgrade

    command.downgrade(alembic_config(old_database.engine), "0006")
    with old_database.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT name, role FROM tokens")).fetchall())
        tables = set(inspect(conn).get_table_names())
    assert rows == dict(OLD_TOKENS)
    assert not {"iam_policies", "service_accounts"} & tables
    old_database.migrate()  # and up again
    assert TokenRepository(old_database).find("secret-bob").principal == "user:bob"  # type: ignore[union-attr]
    old_database.dispose()
