"""Run Alembic migrations programmatically (no alembic.ini needed at run time).

mlengine records its schema revision in its own table, ``mlengine_alembic_version``, and its
migrations only look at its own tables: the same database also holds the tables of Optuna's
``RDBStorage`` (tuning studies, see ``mlengine.tuning.studies``), and Optuna keeps *its*
Alembic revision in the default ``alembic_version`` table. Databases created before this
split recorded mlengine's revision in ``alembic_version``; :func:`upgrade` moves it over once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "mlengine_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def _adopt_legacy_version(engine: Engine, cfg: Config) -> None:
    """Move mlengine's revision out of ``alembic_version`` (where Optuna keeps its own)."""
    tables = set(inspect(engine).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables or "jobs" not in tables:
        return
    ours = {rev.revision for rev in ScriptDirectory.from_config(cfg).walk_revisions()}
    with engine.begin() as conn:
        revision = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).scalar()
        if revision not in ours:
            return
        conn.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
                          f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"))
        conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": revision})
        conn.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def upgrade(engine: Engine, revision: str = "heads") -> None:
    cfg = alembic_config(engine)
    _adopt_legacy_version(engine, cfg)
    command.upgrade(cfg, revision)
