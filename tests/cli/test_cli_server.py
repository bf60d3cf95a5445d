"""`mle server start|status|stop` with a stand-in server module (the real one is e2e-tested)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlengine.cli import server as server_cli
from mlengine.cli.main import cli

FAKE_SERVER = '''
import argparse, json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

home = Path(os.environ["MLE_HOME"])
parser = argparse.ArgumentParser()
for flag in ("--host", "--port", "--executor", "--ray-address", "--database-url"):
    parser.add_argument(flag)
args = parser.parse_args()
print("fake server starting", flush=True)
if os.environ.get("FAKE_CRASH"):
    print("boom: cannot open the database", file=sys.stderr, flush=True)
    sys.exit(3)
token_file = home / "admin_token"
if not token_file.exists():
    token_file.write_text("fake-admin-token\\n")
    token_file.chmod(0o600)
token = token_file.read_text().strip()


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        ok = self.headers.get("Authorization") == f"Bearer {token}"
        status, body = (200, {"version": "0.1.0", "executor": args.executor or "local",
                              "capacitySlots": 2, "hostname": "h", "machineId": "m",
                              "home": str(home), "pid": os.getpid(),
                              "argv": sys.argv[1:]}) if ok else (
            401, {"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


srv = ThreadingHTTPServer((args.host, int(args.port)), H)
url = f"http://{args.host}:{srv.server_address[1]}"


def stop(*_):
    (home / "server.json").unlink(missing_ok=True)
    os._exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("FAKE_IGNORE_TERM") else stop)
time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
(home / "server.json").write_text(json.dumps({"url": url, "pid": os.getpid(), "host": args.host,
                                              "port": srv.server_address[1], "version": "0.1.0",
                                              "startedAt": "2026-01-01T00:00:00Z"}))
srv.serve_forever()
'''

Run = Callable[..., Result]


@pytest.fixture
def mle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "fake_mle_server.py").write_text(FAKE_SERVER)
    monkeypatch.setattr(server_cli, "SERVER_MODULE", "fake_mle_server")
    home = tmp_path / "home"

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        base = {"MLE_HOME": str(home), "PYTHONPATH": str(modules), "MLE_API_URL": "",
                "MLE_TOKEN": ""}
        return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, prog_name="mle")

    yield run
    with contextlib.suppress(Exception):  # never leave a server behind
        os.kill(json.loads((home / "server.json").read_text())["pid"], signal.SIGKILL)


def test_start_status_stop(mle: Run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = mle("server", "start", "--port", "0", "--executor", "ray", "--ray-address", "auto")
    assert started.exit_code == 0, started.output
    url = started.stdout.strip()
    assert url.startswith("http://127.0.0.1:")
    record = json.loads((home / "server.json").read_text())
    assert record["url"] == url and "logs in" in started.stderr
    assert "fake server starting" in (home / "server.log").read_text()

    status = mle("server", "status", "--format", "json")
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert info["running"] is True and info["executor"] == "ray" and info["url"] == url
    assert info["argv"] == ["--host", "127.0.0.1", "--port", "0", "--executor", "ray",
                            "--ray-address", "auto"]
    table = mle("server", "status")
    assert table.exit_code == 0 and f"url:           {url}" in table.stdout

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


def test_a_crashing_server_shows_its_log(mle: Run) -> None:
    result = mle("server", "start", "--port", "0", env={"FAKE_CRASH": "1"})
    assert result.exit_code == 1
    assert "ERROR: (mle.server.start) The server exited with code 3" in result.stderr
    assert "boom: cannot open the database" in result.stderr


def test_a_slow_server_is_given_up(mle: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_cli, "START_TIMEOUT", 1.0)
    result = mle("server", "start", "--port", "0", env={"FAKE_DELAY": "30"})
    assert result.exit_code == 1
    assert "was not ready after 1 s; stopped it" in result.stderr
    assert "fake server starting" in result.stderr


def test_stop_kills_a_server_that_ignores_sigterm(mle: Run, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_cli, "STOP_TIMEOUT", 0.5)
    assert mle("server", "start", "--port", "0", env={"FAKE_IGNORE_TERM": "1"}).exit_code == 0
    pid = json.loads((tmp_path / "home" / "server.json").read_text())["pid"]
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
