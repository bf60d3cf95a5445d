"""Services: managed long-running processes (TensorBoard, notebook servers...), one row each.

Contract: like :mod:`mlengine.store.jobs`, every method is its own transaction and returns
detached rows (safe to read after the call, never to mutate and expect persistence).
Read-modify-write goes through :meth:`ServiceRepository.update` /
:meth:`ServiceRepository.compare_and_set` (row lock on PostgreSQL, the process-wide write lock
on SQLite); both bump ``version``. Only :mod:`mlengine.services.manager` writes ``state`` and
``handle``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from mlengine.core.timeutil import utcnow
from mlengine.errors import not_found
from mlengine.store import paging
from mlengine.store.database import Database
from mlengine.store.models import Base


class ServiceRow(Base):
    """One service. ``spec`` is what its kind validated; ``handle`` is the manager's durable
    record of the current process (pid, start ticks, port, log file) and of its restart
    history, written before the process may serve anything (see ``mlengine.services.manager``).
    """

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_services_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str] = mapped_column(String(16), default="")
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_activity_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


def service_name(project: str, name: str) -> str:
    return f"projects/{project}/services/{name}"


class ServiceRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, project: str, name: str, *, kind: str, spec: dict[str, Any], state: str) -> ServiceRow:
        """Insert a service; 409 ALREADY_EXISTS if the project already has one of that name."""
        row = ServiceRow(project=project, name=name, kind=kind, spec=spec, state=state, stop_reason="",
                         handle={}, restarts=0, error="", create_time=utcnow(), last_activity_time=None,
                         version=1)
        self.db.add_new(row, f"Service {service_name(project, name)}")
        return row

    def get(self, project: str, name: str) -> ServiceRow:
        with self.db.session() as s:
            row = s.scalar(select(ServiceRow).where(ServiceRow.project == project, ServiceRow.name == name))
        if row is None:
            raise not_found(f"Service {service_name(project, name)}")
        return row

    def find_by_pk(self, pk: int) -> ServiceRow | None:
        with self.db.session() as s:
            return s.get(ServiceRow, pk)

    def all(self) -> list[ServiceRow]:
        with self.db.session() as s:
            return list(s.scalars(select(ServiceRow).order_by(ServiceRow.id)))

    def list_page(self, project: str, page_size: int | None,
                  page_token: str | None) -> tuple[list[ServiceRow], str | None]:
        """Services of ``project`` by name, with an opaque token for the next page."""
        size = paging.page_size(page_size)
        after = paging.decode_token("service", page_token) if page_token else None
        with self.db.session() as s:
            stmt = select(ServiceRow).where(ServiceRow.project == project)
            if after is not None:
                stmt = stmt.where(ServiceRow.name > after)
            rows = list(s.scalars(stmt.order_by(ServiceRow.name).limit(size + 1)))
        if len(rows) > size:
            return rows[:size], paging.encode_token("service", rows[size - 1].name)
        return rows, None

    def update(self, pk: int, change: Callable[[ServiceRow], None]) -> ServiceRow:
        """Apply ``change`` to the freshest row in one transaction; 404 if it is gone."""
        def always(row: ServiceRow) -> bool:
            change(row)
            return True

        updated = self.compare_and_set(pk, always)
        if updated is None:
            raise not_found(f"Service #{pk}")
        return updated

    def compare_and_set(self, pk: int, change: Callable[[ServiceRow], bool]) -> ServiceRow | None:
        """Like :meth:`update`, but ``change`` returns False to leave the row as it is (and
        ``None`` is returned). JSON columns must be replaced, never mutated in place."""
        with self.db.session() as s:
            stmt = select(ServiceRow).where(ServiceRow.id == pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = s.scalar(stmt)
            if row is None:
                raise not_found(f"Service #{pk}")
            if not change(row):
                return None
            row.version = row.version + 1
        return row

    def delete(self, pk: int) -> None:
        with self.db.session() as s:
            row = s.get(ServiceRow, pk)
            if row is not None:
                s.delete(row)
