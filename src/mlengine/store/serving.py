"""Models and versions of online prediction (their operations are in :mod:`mlengine.store.operations`).

Contract: like :mod:`mlengine.store.jobs`, every method is its own transaction and returns
detached rows. Writers that read-modify-write go through ``update_*`` (row lock on
PostgreSQL, the process-wide write lock on SQLite). Pages are by name, with opaque page tokens.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlengine.core.timeutil import utcnow
from mlengine.errors import already_exists, not_found
from mlengine.store import paging
from mlengine.store.database import Database
from mlengine.store.models import Base


class ModelRow(Base):
    """A model: a named container of versions with an optional default version."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_models_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # regions, logging flags
    default_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)


class VersionRow(Base):
    """A model version. ``spec`` holds the user's fields (ml v1 ``Version``), ``internal``
    what the serving manager needs (managed model directory, environment, detected framework)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_pk", "name", name="uq_model_versions_model_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    internal: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_use_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


def etag(row_id: int, version: int) -> str:
    digest = hashlib.sha256(f"{row_id}:{version}".encode()).digest()[:8]
    return base64.b64encode(digest).decode()


class ServingRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Models -------------------------------------------------------------------------------
    def create_model(self, project: str, name: str, *, description: str, labels: dict[str, str],
                     spec: dict[str, Any]) -> ModelRow:
        row = ModelRow(project=project, name=name, description=description, labels=labels, spec=spec,
                       default_version=None, create_time=utcnow(), version=1)
        self.db.add_new(row, f"Model projects/{project}/models/{name}")
        return row

    def get_model(self, project: str, name: str) -> ModelRow:
        with self.db.session() as s:
            row = s.scalar(select(ModelRow).where(ModelRow.project == project, ModelRow.name == name))
        if row is None:
            raise not_found(f"Model projects/{project}/models/{name}")
        return row

    def all_models(self) -> list[ModelRow]:
        with self.db.session() as s:
            return list(s.scalars(select(ModelRow).order_by(ModelRow.id)))

    def list_models(self, project: str, predicate: Callable[[ModelRow], bool], page_size: int | None,
                    page_token: str | None) -> tuple[list[ModelRow], str | None]:
        size = paging.page_size(page_size)
        after = paging.decode_token("model", page_token) if page_token else None
        with self.db.session() as s:
            stmt = select(ModelRow).where(ModelRow.project == project)
            if after is not None:
                stmt = stmt.where(ModelRow.name > after)
            rows = [r for r in s.scalars(stmt.order_by(ModelRow.name)) if predicate(r)]
        if len(rows) > size:
            return rows[:size], paging.encode_token("model", rows[size - 1].name)
        return rows, None

    def update_model(self, pk: int, change: Callable[[ModelRow], None]) -> ModelRow:
        with self.db.session() as s:
            stmt = select(ModelRow).where(ModelRow.id == pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = s.scalar(stmt)
            if row is None:
                raise not_found(f"Model #{pk}")
            change(row)
            row.version = row.version + 1
        return row

    def delete_model(self, pk: int, check: Callable[[ModelRow, list[VersionRow]], None]) -> None:
        """Delete the model after ``check(model, versions)`` passes, in one transaction."""
        with self.db.session() as s:
            row = s.get(ModelRow, pk)
            if row is None:
                raise not_found(f"Model #{pk}")
            versions = list(s.scalars(select(VersionRow).where(VersionRow.model_pk == pk)))
            check(row, versions)
            s.delete(row)

    # Versions -----------------------------------------------------------------------------
    def create_version(self, model: ModelRow, name: str, *, spec: dict[str, Any], internal: dict[str, Any],
                       make_default_if_none: bool = True) -> tuple[VersionRow, bool]:
        """Create a CREATING version; returns it and whether it became the model's default."""
        row = VersionRow(model_pk=model.id, name=name, state="CREATING", error_message="", spec=spec,
                         internal=internal, create_time=utcnow(), version=1)
        became_default = False
        try:
            with self.db.session() as s:
                s.add(row)
                s.flush()
                owner = s.get(ModelRow, model.id)
                if owner is None:
                    raise not_found(f"Model projects/{model.project}/models/{model.name}")
                if make_default_if_none and not owner.default_version:
                    owner.default_version = name
                    owner.version = owner.version + 1
                    became_default = True
        except IntegrityError:
            raise already_exists(
                f"Version projects/{model.project}/models/{model.name}/versions/{name}"
            ) from None
        return row, became_default

    def get_version(self, model: ModelRow, name: str) -> VersionRow:
        with self.db.session() as s:
            row = s.scalar(select(VersionRow).where(VersionRow.model_pk == model.id, VersionRow.name == name))
        if row is None:
            raise not_found(f"Version projects/{model.project}/models/{model.name}/versions/{name}")
        return row

    def versions_of(self, model_pk: int) -> list[VersionRow]:
        with self.db.session() as s:
            return list(s.scalars(select(VersionRow).where(VersionRow.model_pk == model_pk)
                                  .order_by(VersionRow.name)))

    def list_versions(self, model: ModelRow, predicate: Callable[[VersionRow], bool], page_size: int | None,
                      page_token: str | None) -> tuple[list[VersionRow], str | None]:
        size = paging.page_size(page_size)
        after = paging.decode_token("version", page_token) if page_token else None
        rows = [r for r in self.versions_of(model.id) if (after is None or r.name > after) and predicate(r)]
        if len(rows) > size:
            return rows[:size], paging.encode_token("version", rows[size - 1].name)
        return rows, None

    def update_version(self, pk: int, change: Callable[[VersionRow], None]) -> VersionRow:
        with self.db.session() as s:
            stmt = select(VersionRow).where(VersionRow.id == pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = s.scalar(stmt)
            if row is None:
                raise not_found(f"Version #{pk}")
            change(row)
            row.version = row.version + 1
        return row

    def delete_version_row(self, pk: int) -> None:
        with self.db.session() as s:
            row = s.get(VersionRow, pk)
            if row is not None:
                s.delete(row)

    def set_last_use(self, times: dict[int, dt.datetime]) -> None:
        with self.db.session() as s:
            for pk, when in times.items():
                row = s.get(VersionRow, pk)
                if row is not None:
                    row.last_use_time = when
