"""`mle server start|status|stop` with real server processes.

start/status/stop run the real ``mlengine.api.server``. What a healthy server never does (start
slowly, ignore SIGTERM) comes from a stand-in module that runs that same real server, with the
misbehaviour added around it: the HTTP API a test talks to is always the real one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlengine.cli import server as server_cli
from mlengine.cli.main import cli

STANDIN_SERVER = '''
import os, signal, sys, time

print("stand-in: running the real mlengine server", flush=True)
time.sleep(float(os.environ.get("STANDIN_DELAY", "0")))

import uvicorn.server

from mlengine.api import server

if os.environ.get("STANDIN_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvicorn.server.HANDLED_SIGNALS = (signal.SIGINT,)  # uvicorn would install its own handler
sys.exit(server.main())
'''

Run = Callable[..., Result]


@pytest.fixture
def mle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "mle_standin_server.py").write_text(STANDIN_SERVER)
    home = tmp_path / "home"

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        base = {"MLE_HOME": str(home), "PYTHONPATH": str(modules), "MLE_API_URL": "", "MLE_TOKEN": "",
                "MLE_DATABASE_URL": "", "MLE_EXECUTOR": ""}
        return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, prog_name="mle")

    yield run
    with contextlib.suppress(Exception):  # never leave a server behind
        os.kill(json.loads((home / "server.json").read_text())["pid"], signal.SIGKILL)


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mle server start` runs the stand-in module instead of mlengine.api.server."""
    monkeypatch.setattr(server_cli, "SERVER_MODULE", "mle_standin_server")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_start_status_stop(mle: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = tmp_path / "elsewhere.db"
    # MLE_EXECUTOR=ray reaches the server too: only a passed --executor makes it local.
    env = {"MLE_EXECUTOR": "ray"}
    started = mle("server", "start", "--port", "0", "--executor", "local", "--database-url", f"sqlite:///{db}",
                  env=env)
    assert started.exit_code == 0, started.output
    url = started.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    record = json.loads((home / "server.json").read_text())
    assert record["url"] == url and "logs in" in started.stderr
    assert "listening on " + url in (home / "server.log").read_text()
    assert cmdline(record["pid"])[1:] == ["-m", "mlengine.api.server", "--host", "127.0.0.1", "--port", "0",
                                          "--executor", "local", "--database-url", f"sqlite:///{db}"]
    assert db.is_file() and not (home / "mlengine.db").exists()  # the server used --database-url

    status = mle("server", "status", "--format", "json", env=env)
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert info["running"] is True and info["url"] == url and info["pid"] == record["pid"]
    assert info["executor"] == "local" and info["home"] == str(home) and info["hostname"] == socket.gethostname()
    table = mle("server", "status")
    assert table.exit_code == 0 and f"url:           {url}" in table.stdout
    assert "executor:      local" in table.stdout

    again = mle("server", "start")
    assert again.exit_code == 0 and again.stdout.strip() == url
    assert "already running" in again.stderr

    stopped = mle("server", "stop")
    assert stopped.exit_code == 0, stopped.output
    assert "shut down cleanly" in stopped.stderr and "keep running" in stopped.stderr
    assert not (home / "server.json").exists()
    assert not server_cli.pid_alive(record["pid"])

    down = mle("server", "status")
    assert down.exit_code == 1 and "No mlengine server is running" in down.stderr
    assert mle("server", "stop").exit_code == 0


def test_a_crashing_server_shows_its_log(mle: Run, tmp_path: Path) -> None:
    # A metadata store that cannot be opened (a directory): the real server exits before it listens.
    result = mle("server", "start", "--port", "0", "--database-url", f"sqlite:///{tmp_path}")
    assert result.exit_code == 1
    assert "ERROR: (mle.server.start) The server exited with code 1 before it was ready" in result.stderr
    assert "unable to open database file" in result.stderr  # the last lines of its log


@pytest.mark.usefixtures("standin")
def test_a_slow_server_is_given_up(mle: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_cli, "START_TIMEOUT", 1.0)
    result = mle("server", "start", "--port", "0", env={"STANDIN_DELAY": "30"})
    assert result.exit_code == 1
    assert "was not ready after 1 s; stopped it" in result.stderr
    assert "stand-in: running the real mlengine server" in result.stderr


@pytest.mark.usefixtures("standin")
def test_stop_kills_a_server_that_ignores_sigterm(mle: Run, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_cli, "STOP_TIMEOUT", 0.5)
    started = mle("server", "start", "--port", "0", env={"STANDIN_IGNORE_TERM": "1"})
    assert started.exit_code == 0, started.output
    pid = json.loads((tmp_path / "home" / "server.json").read_text())["pid"]
    assert mle("server", "status").exit_code == 0  # the real server answers
    stopped = mle("server", "stop")
    assert stopped.exit_code == 0 and "killed it" in stopped.stderr
    assert not server_cli.pid_alive(pid)
    assert not (tmp_path / "home" / "server.json").exists()


def test_stale_server_file_is_cleaned_up(mle: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 2**22 + 7}))
    result = mle("server", "stop")
    assert result.exit_code == 0 and "was not running" in result.stderr
    assert not (home / "server.json").exists()


def test_status_with_a_stale_server_file(mle: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": 2**22 + 7}))
    result = mle("server", "status")
    assert result.exit_code == 1 and "is stale: pid 4194311 is gone" in result.stderr
