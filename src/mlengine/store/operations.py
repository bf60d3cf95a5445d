"""Long-running operations (``google.longrunning.Operation``) of any kind, in the store.

Contract: like the other repositories, every method is its own transaction and returns
detached rows. An operation is found by ``(project, name)``; ``kind`` says what it does
(``CREATE_VERSION``...), ``target`` names the resource it works on (its full resource name,
``projects/p/models/m/versions/v``), ``meta`` is what it renders under ``metadata`` besides the
generic fields, and ``handle`` records the worker process doing the work (written before the
worker starts, so a restarted server finds it). :meth:`OperationRepository.finish` is a
compare-and-set: only the first writer ends an operation; a later one gets ``None``.
Pages are newest-first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from mlengine.core.timeutil import utcnow
from mlengine.errors import not_found
from mlengine.store import paging
from mlengine.store.database import Database
from mlengine.store.models import Base


class OperationRow(Base):
    """A long-running operation on one resource."""

    __tablename__ = "operations"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_operations_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512), index=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OperationRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, project: str, name: str, kind: str, target: str, meta: dict[str, Any], *,
               done: bool = False, response: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> OperationRow:
        """Insert an operation; ALREADY_EXISTS when ``name`` is taken in ``project``."""
        now = utcnow()
        row = OperationRow(project=project, name=name, kind=kind, target=target, done=done,
                           cancel_requested=False, error=error, response=response, meta=meta, handle={},
                           create_time=now, start_time=now, end_time=now if done else None)
        self.db.add_new(row, f"Operation projects/{project}/operations/{name}")
        return row

    def get(self, project: str, name: str) -> OperationRow:
        with self.db.session() as s:
            row = s.scalar(select(OperationRow).where(OperationRow.project == project, OperationRow.name == name))
        if row is None:
            raise not_found(f"Operation projects/{project}/operations/{name}")
        return row

    def get_by_id(self, pk: int) -> OperationRow:
        with self.db.session() as s:
            row = s.get(OperationRow, pk)
        if row is None:
            raise not_found(f"Operation #{pk}")
        return row

    def pending(self, kind: str | None = None, target: str | None = None) -> list[OperationRow]:
        """Operations not done, oldest first (optionally of one kind and/or one target)."""
        with self.db.session() as s:
            stmt = select(OperationRow).where(OperationRow.done.is_(False))
            if kind is not None:
                stmt = stmt.where(OperationRow.kind == kind)
            if target is not None:
                stmt = stmt.where(OperationRow.target == target)
            return list(s.scalars(stmt.order_by(OperationRow.id)))

    def list(self, project: str, predicate: Callable[[OperationRow], bool], page_size: int | None,
             page_token: str | None) -> tuple[list[OperationRow], str | None]:
        size = paging.page_size(page_size)
        before = paging.decode_id_token("op", page_token) if page_token else None
        with self.db.session() as s:
            stmt = select(OperationRow).where(OperationRow.project == project)
            if before is not None:
                stmt = stmt.where(OperationRow.id < before)
            rows = [r for r in s.scalars(stmt.order_by(OperationRow.id.desc())) if predicate(r)]
        if len(rows) > size:
            return rows[:size], paging.encode_token("op", rows[size - 1].id)
        return rows, None

    def update(self, pk: int, change: Callable[[OperationRow], None]) -> OperationRow:
        with self.db.session() as s:
            stmt = select(OperationRow).where(OperationRow.id == pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = s.scalar(stmt)
            if row is None:
                raise not_found(f"Operation #{pk}")
            change(row)
        return row

    def finish(self, pk: int, *, response: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> OperationRow | None:
        """Mark the operation done with ``response`` or ``error``, unless it already is (None)."""
        ended: list[OperationRow] = []

        def change(row: OperationRow) -> None:
            if row.done:
                return
            row.done = True
            row.end_time = utcnow()
            row.response = response if error is None else None
            row.error = error
            ended.append(row)

        self.update(pk, change)
        return ended[0] if ended else None
