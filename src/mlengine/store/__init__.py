"""Metadata store: SQLAlchemy models, Alembic migrations and repositories.

The store is the only state of the control plane: everything the server knows about jobs,
replicas and tokens lives here, so a restarted server loses nothing. SQLite (default) and
PostgreSQL are supported through the same code; the URL picks the backend.
"""

from mlengine.store.database import Database, open_database

__all__ = ["Database", "open_database"]
