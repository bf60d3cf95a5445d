"""Shared test fixtures: a real PostgreSQL server, fresh databases, an isolated MLE_HOME.

Fixtures
--------
``postgres_url`` (session)
    Starts a throw-away PostgreSQL server on 127.0.0.1 (free port, data in a temp dir,
    trust auth on loopback only) and yields
    ``postgresql+psycopg://postgres@127.0.0.1:PORT/mlengine_test``. Set
    ``MLE_TEST_POSTGRES_URL`` to an admin URL of an existing server to use it instead
    (``mlengine_test`` is then created there if missing). Missing PostgreSQL is a test
    *failure*, not a skip: run ``scripts/setup.sh``.
``fresh_postgres_db`` (function)
    A new, empty database on that server for one test, dropped afterwards; yields its URL.
``database_url`` (function, parametrized ``sqlite`` / ``postgresql``)
    An empty database of each backend, for suites that every store backend must pass.
``mle_home`` (function)
    A fresh, short ``MLE_HOME`` under /tmp (unix sockets have a 108-byte path limit) with
    ``MLE_API_URL``, ``MLE_TOKEN``, ``MLE_DATABASE_URL`` and ``MLE_PROJECT`` unset.
``_venv_python_on_path`` (session, automatic)
    ``python`` on PATH is this interpreter, as for a user whose environment is active:
    ``mle local train`` runs the ``python`` on PATH (as gcloud does).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

PG_DATABASE = "mlengine_test"
PG_USER = "postgres"  # the superuser initdb creates; also the OS user we run as under root
SETUP_HINT = "run scripts/setup.sh (it installs the PostgreSQL server)"


# --------------------------------------------------------------------------- #
# PostgreSQL server
# --------------------------------------------------------------------------- #


def _find_pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl (or $PATH)."""

    def version_key(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin", path)
        return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection for CREATE/DROP DATABASE."""
    import psycopg

    return psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=10)


def _libpq_url(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


@dataclass
class _PgServer:
    bindir: Path
    root: Path  # temp dir: data/, sock/, server.log
    port: int
    run_as: list[str]  # command prefix, e.g. ["runuser", "-u", "postgres", "--"]

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, *args],
            cwd=self.root,  # postgres cannot chdir into e.g. /root
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def initdb(self) -> None:
        r = self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", PG_USER,
            "-A", "trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        # Trust, but only over the unix socket in our private dir and 127.0.0.1.
        (self.datadir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(
                "\n# mlengine test server\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root / 'sock'}'\n"
                "max_connections = 200\n"
                "shared_buffers = 32MB\n"
                # Durability is pointless for a throw-away server; speed is not.
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )

    def start(self) -> None:
        r = self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-l", str(self.logfile),
            "-o", f"-p {self.port}",
            "-w", "-t", "60",
            "start",
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n--- server log ---\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop",
                timeout=60,
            )  # fmt: skip


def _start_postgres() -> _PgServer:
    bindir = _find_pg_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under "
            f"/usr/lib/postgresql/*/bin: {SETUP_HINT}. The store tests run against both "
            "SQLite and PostgreSQL.",
            pytrace=False,
        )
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: drop to the postgres user
        try:
            owner = pwd.getpwnam(PG_USER)
        except KeyError:
            pytest.fail(
                f"running as root, but there is no '{PG_USER}' system user to run the "
                f"PostgreSQL server as: {SETUP_HINT}",
                pytrace=False,
            )
        runuser = shutil.which("runuser")
        if runuser:
            run_as = [runuser, "-u", PG_USER, "--"]
        else:
            run_as = [
                "setpriv",
                f"--reuid={owner.pw_uid}",
                f"--regid={owner.pw_gid}",
                "--init-groups",
                "--",
            ]

    last_error: Exception | None = None
    for _attempt in range(3):  # the free port may be taken between probe and bind
        root = Path(tempfile.mkdtemp(prefix="mle-pg-", dir="/tmp"))
        (root / "sock").mkdir()
        if owner is not None:
            for p in (root, root / "sock"):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        server = _PgServer(bindir=bindir, root=root, port=_free_port(), run_as=run_as)
        try:
            server.initdb()
            server.start()
            return server
        except Exception as exc:  # retried, then reported
            last_error = exc
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    pytest.fail(f"could not start a PostgreSQL test server: {last_error}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _venv_python_on_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    bin_dir = tmp_path_factory.mktemp("python-on-path")
    wrapper = bin_dir / "python"  # not a symlink: a venv's python finds its venv by its own path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{before}"
    yield
    os.environ["PATH"] = before


@pytest.fixture(scope="session")
def _postgres_admin_url() -> Iterator[str]:
    """Admin URL (database ``postgres``) of the test server; starts it if needed."""
    external = os.environ.get("MLE_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server = _start_postgres()
    try:
        yield server.admin_url
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(_postgres_admin_url: str) -> str:
    """SQLAlchemy URL of the ``mlengine_test`` database on a real PostgreSQL server."""
    with _admin_connect(_postgres_admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    return _with_database(_postgres_admin_url, PG_DATABASE)


@pytest.fixture
def fresh_postgres_db(_postgres_admin_url: str) -> Iterator[str]:
    """URL of a brand-new empty database, dropped (connections and all) after the test."""
    name = f"test_{uuid.uuid4().hex}"
    with _admin_connect(_postgres_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(_postgres_admin_url, name)
    finally:
        with _admin_connect(_postgres_admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlengine.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


# --------------------------------------------------------------------------- #
# MLE_HOME
# --------------------------------------------------------------------------- #

_CLIENT_ENV = ("MLE_API_URL", "MLE_TOKEN", "MLE_DATABASE_URL", "MLE_PROJECT")


@pytest.fixture
def mle_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MLE_HOME with a short path (unix sockets live there) and a clean client env."""
    home = Path(tempfile.mkdtemp(prefix="mle-", dir="/tmp"))
    monkeypatch.setenv("MLE_HOME", str(home))
    for name in _CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
