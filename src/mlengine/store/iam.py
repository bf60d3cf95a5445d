"""IAM policies and service accounts in the metadata store.

Contract
--------
- :class:`PolicyStore` keeps every policy in memory (loaded once, written through to the
  ``iam_policies`` table), so authorizing a request never reads the database. One instance per
  control plane, shared by everything that changes policies (the API, the job service, the
  model service); it is thread-safe. :attr:`PolicyStore.generation` grows with every change:
  caches of effective permissions compare it to know they are stale.
- A policy never set reads as empty with revision 0. Writers that read-modify-write go
  through :meth:`PolicyStore.update` (serialized by the store's lock); :meth:`PolicyStore.set`
  compares the etag the caller read (409 ABORTED when the policy changed since).
- :class:`ServiceAccountRepository` holds the accounts users create; the accounts the server
  makes for jobs (``job-<jobId>@...``) are implicit and have no row.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from mlengine.core import iam
from mlengine.core.iam import Binding
from mlengine.core.timeutil import utcnow
from mlengine.errors import Code, MLEngineError, not_found
from mlengine.store.database import Database
from mlengine.store.models import PolicyRow, ServiceAccountRow


@dataclass(frozen=True)
class StoredPolicy:
    bindings: tuple[Binding, ...] = ()
    revision: int = 0

    @property
    def etag(self) -> str:
        return iam.policy_etag(self.revision)

    def render(self) -> dict[str, object]:
        return iam.render_policy(self.bindings, self.revision)


EMPTY = StoredPolicy()


def _decode(data: object) -> tuple[Binding, ...]:
    """Bindings as stored (validated when they were set; a role since removed is dropped)."""
    out = []
    for item in data if isinstance(data, list) else []:
        try:
            out.append(iam.binding_from_json(item, "binding"))
        except MLEngineError:
            continue
    return tuple(out)


class PolicyStore:
    def __init__(self, db: Database | None) -> None:
        """``db`` None: policies kept in memory only (tests of the API without a store)."""
        self.db = db
        self._lock = threading.RLock()
        self._changes = itertools.count(1)
        self.generation = 0
        rows: list[PolicyRow] = []
        if db is not None:
            with db.session() as s:
                rows = list(s.scalars(select(PolicyRow)))
        self._policies: dict[str, StoredPolicy] = {r.resource: StoredPolicy(_decode(r.bindings), r.revision)
                                                   for r in rows}

    def get(self, resource: str) -> StoredPolicy:
        return self._policies.get(resource, EMPTY)

    def _session(self) -> Any:
        if self.db is None:
            return _NoSession()
        return self.db.session()

    def bindings(self, resources: Sequence[str]) -> list[tuple[Binding, ...]]:
        """The bindings of each resource (no database access)."""
        policies = self._policies
        return [policies[r].bindings for r in resources if r in policies]

    def set(self, resource: str, bindings: Sequence[Binding], etag: str | None = None) -> StoredPolicy:
        """Replace the policy of ``resource``; with ``etag``, only if it is still the one read."""

        def replace(current: StoredPolicy) -> Sequence[Binding]:
            if etag and etag != current.etag:
                raise MLEngineError(Code.ABORTED, f"The etag {etag!r} does not match the current etag of the "
                                    f"policy of {resource}: it was changed concurrently; read it again and retry")
            return bindings

        return self.update(resource, replace)

    def update(self, resource: str, change: Callable[[StoredPolicy], Sequence[Binding]]) -> StoredPolicy:
        """Read-modify-write the policy of ``resource`` (serialized); ``change`` returns the new bindings."""
        with self._lock:
            current = self.get(resource)
            bindings = tuple(change(current))
            if bindings == current.bindings and current.revision:
                return current
            revision = current.revision + 1
            payload = [b.to_json() for b in bindings]
            with self._session() as s:
                row = s.scalar(select(PolicyRow).where(PolicyRow.resource == resource).with_for_update())
                if row is None:
                    s.add(PolicyRow(resource=resource, bindings=payload, revision=revision, update_time=utcnow()))
                else:
                    row.bindings, row.revision, row.update_time = payload, revision, utcnow()
            stored = StoredPolicy(bindings, revision)
            self._policies[resource] = stored
            self.generation = next(self._changes)
            return stored

    def add_member(self, resource: str, role: str, member: str) -> StoredPolicy:
        return self.update(resource, lambda p: iam.with_member(p.bindings, role, member))

    def delete(self, resource: str) -> None:
        """Forget the policy of a resource that is gone (a model deleted: a new one of the
        same name starts with no bindings)."""
        with self._lock:
            with self._session() as s:
                s.execute(delete(PolicyRow).where(PolicyRow.resource == resource))
            if self._policies.pop(resource, None) is not None:
                self.generation = next(self._changes)


class _NoSession:
    """Stands in for a store session when policies live in memory only."""

    def __enter__(self) -> _NoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def scalar(self, *_args: object) -> None:
        return None

    def add(self, _row: object) -> None:
        return None

    def execute(self, *_args: object) -> None:
        return None


class ServiceAccountRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, project: str, account_id: str, display_name: str = "") -> ServiceAccountRow:
        row = ServiceAccountRow(project=project, account_id=account_id, display_name=display_name,
                                create_time=utcnow())
        self.db.add_new(row, f"Service account {iam.service_account_email(project, account_id)}")
        return row

    def get(self, project: str, account_id: str) -> ServiceAccountRow:
        with self.db.session() as s:
            row = s.scalar(select(ServiceAccountRow).where(ServiceAccountRow.project == project,
                                                           ServiceAccountRow.account_id == account_id))
        if row is None:
            raise not_found(f"Service account {iam.service_account_email(project, account_id)}")
        return row

    def list(self, project: str) -> list[ServiceAccountRow]:
        with self.db.session() as s:
            return list(s.scalars(select(ServiceAccountRow).where(ServiceAccountRow.project == project)
                                  .order_by(ServiceAccountRow.account_id)))

    def delete(self, project: str, account_id: str) -> None:
        row = self.get(project, account_id)
        with self.db.session() as s:
            s.execute(delete(ServiceAccountRow).where(ServiceAccountRow.id == row.id))
