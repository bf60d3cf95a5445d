"""SQLAlchemy table definitions. Changing a table means adding an Alembic migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class JobRow(Base):
    """A job of any kind (training, tuning, a tuning trial, ...; ``kind`` names its
    :class:`~mlengine.jobs.kinds.JobKind`).

    ``input``/``output`` are the kind's API fields (``trainingInput``/``trainingOutput``...).
    ``scheduling`` is the scheduler's private record (:class:`mlengine.jobs.scheduling.SchedulingState`,
    written only by :mod:`mlengine.jobs`); ``kind_state`` is the kind's own, written only by it.
    Trials of a tuning job have ids ``<parent jobId>/trials/<trialId>`` (a ``/`` no user id may
    hold, hence the 255 characters) and ``parent_pk``.
    """

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("project", "job_id", name="uq_jobs_project_job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    job_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default="training")
    parent_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error_message: Mapped[str] = mapped_column(Text, default="")
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels_version: Mapped[int] = mapped_column(Integer, default=0)
    scheduling: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kind_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ReplicaRow(Base):
    """One process of a job as launched by an executor; ``handle`` is the executor's record
    (pid, files, actor id...) needed to find the replica again after a server restart."""

    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("job_pk", "task_name", name="uq_replicas_job_task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_name: Mapped[str] = mapped_column(String(64))
    task_type: Mapped[str] = mapped_column(String(16))
    task_index: Mapped[int] = mapped_column(Integer)
    executor: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    handle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    start_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TokenRow(Base):
    """An API token. Only its SHA-256 is stored; the token itself is shown once.

    ``principal`` is the IAM member it speaks for (``user:NAME``, ``serviceAccount:EMAIL``),
    ``groups`` the groups it belongs to (``group:NAME`` members); what it may do is what the
    IAM policies grant them (:mod:`mlengine.core.iam`). ``job_pk`` marks the token the server
    made for a job's replicas, deleted when the job ends.
    """

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    principal: Mapped[str] = mapped_column(String(320))
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list, nullable=True)
    job_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PolicyRow(Base):
    """The IAM policy of one resource (``server``, ``projects/p``, ``projects/p/jobs/j``,
    ``projects/p/models/m``): its bindings as JSON and a revision the etag is made from."""

    __tablename__ = "iam_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(512), unique=True)
    bindings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ServiceAccountRow(Base):
    """A service account of a project: ``<account_id>@<project>.iam.mlengine``."""

    __tablename__ = "service_accounts"
    __table_args__ = (UniqueConstraint("project", "account_id", name="uq_service_accounts_project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    account_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(256), default="")
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ConsoleUserRow(Base):
    """A person who signs in to the web console with a password (salted scrypt hash only)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list, nullable=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ConsoleSessionRow(Base):
    """A signed-in browser: the digest of its cookie's secret, who it speaks for (a token's
    principal, ``token_name``, or a console user's, ``user_name``), its CSRF token and expiry."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str] = mapped_column(String(320))
    groups: Mapped[list[Any]] = mapped_column(JSON, default=list, nullable=True)
    token_name: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    user_name: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
