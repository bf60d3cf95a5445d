"""API tokens. Only SHA-256 digests are stored; lookups compare digests in constant time.

A token speaks for an IAM principal (``user:NAME`` or ``serviceAccount:EMAIL``) and may belong
to groups; what it may do is what the IAM policies grant (:mod:`mlengine.store.iam`). Tokens
with a ``job_pk`` are the ones the server makes for a job's replicas (:mod:`mlengine.jobs.identity`).

:attr:`TokenRepository.generation` grows with every change made through this repository, so
an in-memory copy (the API's token cache) knows when to read the table again.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select

from mlengine.core.timeutil import utcnow
from mlengine.errors import invalid, not_found
from mlengine.store.database import Database
from mlengine.store.models import TokenRow

TOKEN_PREFIX = "mle_"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Names of the tokens the server makes for jobs (``job-<pk>``); users cannot take them.
JOB_TOKEN_PREFIX = "job-"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._changes = itertools.count(1)
        self.generation = 0

    def _changed(self) -> None:
        self.generation = next(self._changes)

    def create(self, name: str, principal: str | None = None, groups: Sequence[str] = (), *,
               job_pk: int | None = None, token: str | None = None) -> tuple[TokenRow, str]:
        """Create a token (principal ``user:<name>`` by default); returns the row and the
        secret (shown once, never stored)."""
        if not NAME_RE.match(name or ""):
            raise invalid("name", "must be 1-64 letters, digits, '-' or '_'")
        if name.startswith(JOB_TOKEN_PREFIX) and job_pk is None:
            raise invalid("name", f"names starting with {JOB_TOKEN_PREFIX!r} are the server's (tokens of jobs)")
        secret = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = TokenRow(name=name, principal=principal or f"user:{name}", groups=list(groups), job_pk=job_pk,
                       token_sha256=digest(secret), create_time=utcnow())
        self.db.add_new(row, f"Token {name!r}")
        self._changed()
        return row, secret

    def all(self) -> list[TokenRow]:
        with self.db.session() as s:
            return list(s.scalars(select(TokenRow).order_by(TokenRow.id)))

    def delete(self, name: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(TokenRow).where(TokenRow.name == name))
            if row is None:
                raise not_found(f"Token {name!r}")
            s.delete(row)
        self._changed()

    def delete_for_jobs(self, job_pks: Sequence[int]) -> int:
        """Delete the tokens made for these jobs; returns how many there were."""
        if not job_pks:
            return 0
        with self.db.session() as s:
            result: Any = s.execute(delete(TokenRow).where(TokenRow.job_pk.in_(list(job_pks))))
            count = result.rowcount or 0
        if count:
            self._changed()
        return int(count)

    def discard(self, name: str) -> bool:
        """Delete token ``name`` if it exists; returns whether it did."""
        with self.db.session() as s:
            result: Any = s.execute(delete(TokenRow).where(TokenRow.name == name))
            count = result.rowcount or 0
        if count:
            self._changed()
        return bool(count)

    def delete_for_principal(self, principal: str) -> int:
        """Delete every token of ``principal`` (a service account that was deleted)."""
        with self.db.session() as s:
            result: Any = s.execute(delete(TokenRow).where(TokenRow.principal == principal))
            count = result.rowcount or 0
        if count:
            self._changed()
        return int(count)

    def job_pks(self) -> set[int]:
        """The jobs that have a token."""
        with self.db.session() as s:
            return {pk for pk in s.scalars(select(TokenRow.job_pk).where(TokenRow.job_pk.is_not(None))) if pk}

    def find(self, token: str) -> TokenRow | None:
        """The row whose digest matches, comparing every digest in constant time."""
        wanted = digest(token)
        match = None
        for row in self.all():
            if hmac.compare_digest(row.token_sha256, wanted):
                match = row
        return match
