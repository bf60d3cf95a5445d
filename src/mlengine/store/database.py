"""Engine creation and schema migration for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mlengine.errors import Code, MLEngineError

SUPPORTED_SCHEMES = ("sqlite", "postgresql")


def _normalize_url(url: str) -> str:
    # Users write postgresql://; we ship psycopg 3, whose SQLAlchemy dialect is +psycopg.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """An engine plus a session factory. Thread-safe: each ``session()`` is its own unit of
    work; callers never share a Session across threads."""

    def __init__(self, url: str) -> None:
        url = _normalize_url(url)
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in SUPPORTED_SCHEMES:
            raise MLEngineError(
                Code.INVALID_ARGUMENT,
                f"Unsupported database URL scheme {scheme!r}; use one of: "
                + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES),
            )
        self.url = url
        self.is_sqlite = scheme == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 10
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; serializing writers in-process avoids "database is locked".
        self._write_lock = threading.RLock() if self.is_sqlite else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on error."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._factory() as session, session.begin():
                yield session
        finally:
            if lock is not None:
                lock.release()

    def write_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Hold the process-wide writer lock (SQLite; a no-op on PostgreSQL) while another
        engine on the same database writes, e.g. Optuna's storage of tuning studies."""
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    def add_new(self, row: Any, what: str) -> Any:
        """Insert ``row``; a unique-constraint conflict becomes 409 ALREADY_EXISTS naming ``what``."""
        from sqlalchemy.exc import IntegrityError

        from mlengine.errors import already_exists

        try:
            with self.session() as s:
                s.add(row)
                s.flush()
        except IntegrityError:
            raise already_exists(what) from None
        return row

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from mlengine.store.migrate import upgrade

        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_database(url: str, migrate: bool = True) -> Database:
    db = Database(url)
    if migrate:
        db.migrate()
    return db
