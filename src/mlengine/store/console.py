"""Console users (name + password) and browser sessions.

Passwords are hashed with scrypt (the standard library's ``hashlib.scrypt``, a memory-hard KDF:
no extra dependency) with a random salt per user; the stored string names its parameters so
they can be raised later. A session's cookie carries a random secret; only its SHA-256 digest
is stored, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy import delete, select

from mlengine.core import iam
from mlengine.core.timeutil import utcnow
from mlengine.errors import invalid, not_found
from mlengine.store.database import Database
from mlengine.store.models import ConsoleSessionRow, ConsoleUserRow

#: scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and 0.1-0.3 s of one core per check (OWASP lists
#: 2**17 / 8 / 1 at 128 MiB; a sign-in is rare and the server is shared with training, so less).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SESSION_HOURS = 12
NAME_RE = iam.USER_NAME_RE


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=128 * 1024 * 1024, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(key))


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so a wrong name costs as long as a wrong password."""
    return hash_password(secrets.token_hex(8))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ConsoleUsers:
    """Users who sign in with a password."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, password: str, groups: Sequence[str] = ()) -> ConsoleUserRow:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise invalid("name", "must be 1-128 letters, digits or . _ @ + - and start with a letter or digit")
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise invalid("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        row = ConsoleUserRow(name=name, groups=list(groups), password_hash=hash_password(password),
                             create_time=utcnow())
        self.db.add_new(row, f"User {name!r}")
        return row

    def all(self) -> list[ConsoleUserRow]:
        with self.db.session() as s:
            return list(s.scalars(select(ConsoleUserRow).order_by(ConsoleUserRow.name)))

    def delete(self, name: str) -> list[int]:
        """Delete the user and sign out every browser of theirs; returns those sessions' ids."""
        with self.db.session() as s:
            row = s.scalar(select(ConsoleUserRow).where(ConsoleUserRow.name == name))
            if row is None:
                raise not_found(f"User {name!r}")
            s.delete(row)
            ids = list(s.scalars(select(ConsoleSessionRow.id).where(ConsoleSessionRow.user_name == name)))
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user_name == name))
            return ids

    def check(self, name: str, password: str) -> ConsoleUserRow | None:
        """The user if the password is theirs, else None (in about the same time either way)."""
        with self.db.session() as s:
            row = s.scalar(select(ConsoleUserRow).where(ConsoleUserRow.name == name))
        if row is None:
            verify_password(password, _dummy_hash())
            return None
        return row if verify_password(password, row.password_hash) else None


class ConsoleSessions:
    """Signed-in browsers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, principal: str, groups: Sequence[str], *, token_name: str | None = None,
               user_name: str | None = None, hours: float = SESSION_HOURS) -> tuple[ConsoleSessionRow, str]:
        """A new session; returns the row and the cookie's secret (never stored)."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        row = ConsoleSessionRow(secret_sha256=_digest(secret), csrf_token=secrets.token_urlsafe(32),
                                principal=principal, groups=list(groups), token_name=token_name,
                                user_name=user_name, create_time=now, expire_time=now + dt.timedelta(hours=hours))
        self.db.add_new(row, "Session")
        return row, secret

    def find(self, secret: str) -> ConsoleSessionRow | None:
        """The live session of this secret (digest lookup: the digest is the unique key)."""
        if not secret or len(secret) > 256:
            return None
        with self.db.session() as s:
            row = s.scalar(select(ConsoleSessionRow).where(ConsoleSessionRow.secret_sha256 == _digest(secret)))
        if row is None:
            return None
        expires = row.expire_time if row.expire_time.tzinfo else row.expire_time.replace(tzinfo=dt.timezone.utc)
        return row if expires > utcnow() else None

    def end(self, secret: str) -> None:
        with self.db.session() as s:
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.secret_sha256 == _digest(secret)))

    def purge_expired(self) -> list[int]:
        """Delete expired sessions; returns their ids (their proxy tokens go too)."""
        with self.db.session() as s:
            expired = ConsoleSessionRow.expire_time < utcnow()
            ids = list(s.scalars(select(ConsoleSessionRow.id).where(expired)))
            if ids:
                s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id.in_(ids)))
            return ids
