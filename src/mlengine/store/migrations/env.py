"""Alembic environment: uses the engine handed over by mlengine.store.migrate.

Only mlengine's own tables are compared (Optuna's share the database) and the revision lives
in ``mlengine_alembic_version`` (Optuna's Alembic owns ``alembic_version``).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from mlengine.store.migrate import VERSION_TABLE
from mlengine.store.models import Base

config = context.config
engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    return type_ != "table" or name in Base.metadata.tables


with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table=VERSION_TABLE,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
