"""API tokens. Only SHA-256 digests are stored; lookups compare digests in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from mlengine.core.timeutil import utcnow
from mlengine.errors import invalid, not_found
from mlengine.store.database import Database
from mlengine.store.models import TokenRow

TOKEN_PREFIX = "mle_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, role: str, token: str | None = None) -> tuple[TokenRow, str]:
        """Create a token; returns the row and the secret (shown once, never stored)."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise invalid("name", "must be 1-64 letters, digits, '-' or '_'")
        secret = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = TokenRow(name=name, role=role, token_sha256=digest(secret), create_time=utcnow())
        self.db.add_new(row, f"Token {name!r}")
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

    def find(self, token: str) -> TokenRow | None:
        """The row whose digest matches, comparing every digest in constant time."""
        wanted = digest(token)
        match = None
        for row in self.all():
            if hmac.compare_digest(row.token_sha256, wanted):
                match = row
        return match
