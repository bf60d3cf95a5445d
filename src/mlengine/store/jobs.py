"""Job and replica repository.

Contract: every method is its own transaction and returns detached rows (safe to read after
the call, never to mutate and expect persistence). Concurrent writers (API threads, the
scheduler) go through :meth:`JobRepository.update`, which reads and writes in one transaction
with a row lock on PostgreSQL and the process-wide write lock on SQLite.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from mlengine.core.names import LABEL_KEY_RE
from mlengine.core.timeutil import utcnow
from mlengine.errors import not_found
from mlengine.store import paging
from mlengine.store.database import Database
from mlengine.store.filters import (
    FieldCompiler,
    Node,
    SqlFilter,
    optional_string_compiler,
    parse_filter,
    string_compiler,
    timestamp_compiler,
    to_sql,
)
from mlengine.store.models import JobRow, ReplicaRow


def etag_of(row: JobRow) -> str:
    """Guards what users can change (labels): the scheduler moving a job along must not
    invalidate a client's read-modify-write of its labels."""
    digest = hashlib.sha256(f"{row.id}:{row.labels_version or 0}".encode()).digest()[:8]
    return base64.b64encode(digest).decode()


def job_field(name: str) -> FieldCompiler | None:
    """How a field of a rendered Job compiles to SQL over the ``jobs`` table (None: Python only).
    ``state``, ``jobId`` and ``createTime`` are columns; labels are a JSON object of strings
    (``labels.KEY`` reads it with SQLite's ``json_extract`` / PostgreSQL's ``->>``)."""
    if name == "state":
        return string_compiler(JobRow.state)
    if name == "jobId":
        return string_compiler(JobRow.job_id)
    if name == "createTime":
        return timestamp_compiler(JobRow.create_time)
    if name.startswith("labels.") and LABEL_KEY_RE.match(name[7:]):
        return optional_string_compiler(JobRow.labels[name[7:]].as_string())
    if name == "labels":
        return _has_label
    return None


def _has_label(c: Any) -> Any:
    """``labels:KEY`` (the key is present), ``labels:*`` (always: a job renders ``labels``)."""
    from sqlalchemy import true

    if c.op != ":":
        return None
    if c.value == "*":
        return true()
    return JobRow.labels[c.value].as_string().is_not(None) if LABEL_KEY_RE.match(c.value) else None


@dataclass(frozen=True)
class JobFilter:
    """A list filter over jobs: ``sql`` narrows the rows in the database; ``node`` is the whole
    expression, to evaluate in Python on the rendered jobs when ``sql`` is not exact."""

    node: Node | None
    sql: SqlFilter

    @property
    def needs_python(self) -> bool:
        return not self.sql.exact


def compile_job_filter(text: str | None) -> JobFilter:
    """Parse an AIP-160 filter (``invalid("filter", ...)`` if it is wrong) and push down to SQL
    what can be: ``state``, ``labels.*``, ``labels:KEY``, ``createTime``, ``jobId`` prefixes."""
    node = parse_filter(text)
    return JobFilter(node, to_sql(node, job_field))


class JobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Jobs ---------------------------------------------------------------------------------
    def create(
        self,
        project: str,
        job_id: str,
        *,
        kind: str,
        state: str,
        input: dict[str, Any],
        labels: dict[str, str],
        scheduling: dict[str, Any] | None = None,
        kind_state: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        parent_pk: int | None = None,
    ) -> JobRow:
        row = JobRow(
            project=project,
            job_id=job_id,
            kind=kind,
            parent_pk=parent_pk,
            state=state,
            create_time=utcnow(),
            error_message="",
            input=input,
            output=output or {},
            labels=labels,
            labels_version=0,
            scheduling=scheduling or {},
            kind_state=kind_state or {},
            version=1,
        )
        self.db.add_new(row, f"Job projects/{project}/jobs/{job_id}")
        return row

    def get(self, project: str, job_id: str) -> JobRow:
        with self.db.session() as s:
            row = s.scalar(select(JobRow).where(JobRow.project == project, JobRow.job_id == job_id))
        if row is None:
            raise not_found(f"Job projects/{project}/jobs/{job_id}")
        return row

    def get_by_pk(self, pk: int) -> JobRow:
        with self.db.session() as s:
            row = s.get(JobRow, pk)
        if row is None:
            raise not_found(f"Job #{pk}")
        return row

    def update(self, pk: int, change: Callable[[JobRow], None]) -> JobRow:
        """Apply ``change`` to the freshest row inside one transaction; bumps the etag."""

        def always(row: JobRow) -> bool:
            change(row)
            return True

        row = self.compare_and_set(pk, always)
        if row is None:  # pragma: no cover - ``always`` never declines
            raise not_found(f"Job #{pk}")
        return row

    def compare_and_set(self, pk: int, change: Callable[[JobRow], bool]) -> JobRow | None:
        """Like :meth:`update`, but ``change`` decides: it returns False to leave the row as
        it is (the state it expected is gone), and then the transaction writes nothing and
        ``None`` is returned."""
        with self.db.session() as s:
            stmt = select(JobRow).where(JobRow.id == pk)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            row = s.scalar(stmt)
            if row is None:
                raise not_found(f"Job #{pk}")
            if not change(row):
                return None  # nothing was changed: the commit writes nothing
            row.version = row.version + 1
        return row

    def list_page(
        self,
        project: str,
        predicate: Callable[[JobRow], bool] | None,
        page_size: int | None,
        page_token: str | None,
        *,
        where: JobFilter | None = None,
        exclude_kinds: Collection[str] = (),
    ) -> tuple[list[JobRow], str | None]:
        """Newest first. ``where`` (:func:`compile_job_filter`) and ``exclude_kinds`` select rows
        in SQL; ``predicate`` (None: none) filters what SQL returned, in Python: give it only
        when ``where.needs_python`` or for conditions SQL cannot know."""
        size = paging.page_size(page_size)
        before = paging.decode_id_token("id", page_token) if page_token else None
        result: list[JobRow] = []
        batch = 500 if predicate is not None else size + 1
        with self.db.session() as s:
            cursor = before
            while len(result) <= size:
                stmt = select(JobRow).where(JobRow.project == project)
                if where is not None and where.sql.where is not None:
                    stmt = stmt.where(where.sql.where)
                if exclude_kinds:
                    stmt = stmt.where(JobRow.kind.not_in(list(exclude_kinds)))
                if cursor is not None:
                    stmt = stmt.where(JobRow.id < cursor)
                rows = list(s.scalars(stmt.order_by(JobRow.id.desc()).limit(batch)))
                if not rows:
                    break
                for row in rows:
                    if predicate is None or predicate(row):
                        result.append(row)
                        if len(result) > size:
                            break
                if len(rows) < batch:
                    break
                cursor = rows[-1].id
        if len(result) > size:
            return result[:size], paging.encode_token("id", result[size - 1].id)
        return result, None

    def children(self, parent: JobRow) -> list[JobRow]:
        """The jobs ``parent`` made (the trials of a tuning job), oldest first."""
        with self.db.session() as s:
            return list(s.scalars(select(JobRow).where(JobRow.parent_pk == parent.id).order_by(JobRow.id)))

    def in_states(self, states: Iterable[str]) -> list[JobRow]:
        with self.db.session() as s:
            return list(s.scalars(select(JobRow).where(JobRow.state.in_(list(states))).order_by(JobRow.id)))

    def count_by_state(self) -> list[tuple[str, str, str, int]]:
        """``(project, kind, state, count)`` of every job, one grouped query (for metrics)."""
        with self.db.session() as s:
            rows = s.execute(select(JobRow.project, JobRow.kind, JobRow.state, func.count())
                             .group_by(JobRow.project, JobRow.kind, JobRow.state))
            return [(str(p), str(k), str(st), int(n)) for p, k, st, n in rows]

    def oldest_queued(self) -> list[tuple[str, Any]]:
        """``(project, create_time)`` of the oldest QUEUED job of each project."""
        with self.db.session() as s:
            rows = s.execute(select(JobRow.project, func.min(JobRow.create_time))
                             .where(JobRow.state == "QUEUED").group_by(JobRow.project))
            return [(str(p), t) for p, t in rows]

    def queue_position(self, row: JobRow) -> int:
        """1-based position among QUEUED jobs (0 when the job is not queued)."""
        if row.state != "QUEUED":
            return 0
        with self.db.session() as s:
            ahead = s.scalar(
                select(func.count()).select_from(JobRow).where(JobRow.state == "QUEUED", JobRow.id < row.id)
            )
        return int(ahead or 0) + 1

    # Replicas -----------------------------------------------------------------------------
    def add_replica(self, replica: ReplicaRow) -> ReplicaRow:
        with self.db.session() as s:
            s.add(replica)
            s.flush()
        return replica

    def replicas(self, job_pk: int) -> list[ReplicaRow]:
        with self.db.session() as s:
            return list(s.scalars(select(ReplicaRow).where(ReplicaRow.job_pk == job_pk).order_by(ReplicaRow.id)))

    def update_replica(self, replica_pk: int, **values: Any) -> None:
        with self.db.session() as s:
            row = s.get(ReplicaRow, replica_pk)
            if row is None:
                raise not_found(f"Replica #{replica_pk}")
            for key, value in values.items():
                setattr(row, key, value)

    def delete_replicas(self, job_pk: int, names: Sequence[str] | None = None) -> None:
        with self.db.session() as s:
            for row in s.scalars(select(ReplicaRow).where(ReplicaRow.job_pk == job_pk)):
                if names is None or row.task_name in names:
                    s.delete(row)
