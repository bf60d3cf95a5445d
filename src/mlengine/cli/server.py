"""``mle server start|stop|status``: the control plane on this machine.

The server records itself in ``$MLE_HOME/server.json`` once it listens (and removes the file
on a clean shutdown); ``start`` waits for that file and for ``GET /v1/server`` to answer,
``stop`` signals the recorded pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, fail, settings
from mlengine.client.connection import read_server_file, resolve_token
from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError

SERVER_MODULE = "mlengine.api.server"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie child of ours is reaped, not alive)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_server_process(pid: int) -> bool:
    """False when ``pid`` was recycled by another program (checked where /proc exists)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"mlengine" in cmdline or SERVER_MODULE.encode() in cmdline


def server_log(home: Path) -> Path:
    return home / "server.log"


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip("\n").splitlines()[-lines:]) or "(empty log)"


def probe(url: str, token: str, timeout: float = 3.0) -> dict[str, Any]:
    """``GET /v1/server`` once, without retries."""
    from mlengine.client.http import Client

    with Client(url, token, timeout=timeout, retries=0) as c:
        return c.server_info()


def running_server(cfg: Settings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(server.json, GET /v1/server) of the recorded server if it answers, else None."""
    try:
        record = read_server_file(cfg)
    except MLEngineError:
        return None
    if record is None:
        return None
    pid = record.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return None
    try:
        return record, probe(str(record["url"]), resolve_token(cfg))
    except MLEngineError as err:
        if err.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
            raise
        return None


def server_argv(
    host: str, port: int, executor: str | None, ray_address: str | None, database_url: str | None
) -> list[str]:
    argv = [sys.executable, "-m", SERVER_MODULE, "--host", host, "--port", str(port)]
    if executor:
        argv += ["--executor", executor]
    if ray_address:
        argv += ["--ray-address", ray_address]
    if database_url:
        argv += ["--database-url", database_url]
    return argv


def wait_until_ready(proc: subprocess.Popen[bytes], cfg: Settings, started: float,
                     timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Wait for the spawned server to record itself and answer; its server.json."""
    log = server_log(cfg.home)
    deadline = time.monotonic() + timeout
    with output.spinner("Starting the mlengine server..."):
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise fail(
                    f"The server exited with code {code} before it was ready. "
                    f"Last lines of {log}:\n{log_tail(log)}"
                )
            with contextlib.suppress(MLEngineError, OSError):
                record = read_server_file(cfg)
                fresh = record is not None and (
                    record.get("pid") == proc.pid or cfg.server_file.stat().st_mtime >= started
                )
                if record is not None and fresh:
                    token = resolve_token(cfg)  # written by the server before server.json
                    try:
                        probe(str(record["url"]), token, timeout=2.0)
                        return record
                    except MLEngineError as err:
                        if err.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
                            raise fail(
                                f"The server at {record['url']} is up but rejected the token: "
                                f"{err.message}"
                            ) from None
            time.sleep(0.2)
    with contextlib.suppress(OSError):
        proc.terminate()
    raise fail(
        f"The server was not ready after {timeout:.0f} s; stopped it. "
        f"Last lines of {log}:\n{log_tail(log)}"
    )


@click.group(cls=MleGroup)
def server() -> None:
    """Start, stop and inspect the mlengine server on this machine.

    The server keeps its state under MLE_HOME (default ~/.mlengine): the metadata database,
    server.json (its URL and pid while it runs), admin_token and server.log.

    \b
    Examples:
      mle server start
      mle server start --port 9000 --executor ray --ray-address auto
      mle server status
      mle server stop
    """


@server.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--foreground", is_flag=True, help="Run in this terminal instead of in the background.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where trainer replicas run (default: MLE_EXECUTOR, else local).")
@click.option("--ray-address", default=None,
              help="Ray cluster to use with --executor ray (host:port or auto). Default: a local Ray "
                   "that the server starts (or joins) under MLE_HOME/ray: 127.0.0.1 only, token auth, "
                   "no dashboard or job API.")
@click.option("--database-url", default=None,
              help="SQLAlchemy URL of the metadata store (default: SQLite under MLE_HOME).")
def start(
    host: str, port: int, foreground: bool, executor: str | None, ray_address: str | None,
    database_url: str | None,
) -> None:
    """Start the mlengine server.

    By default the server runs in the background (its output goes to MLE_HOME/server.log);
    this command returns once it answers requests and prints its URL. If a server is already
    running under MLE_HOME, says so and succeeds.

    \b
    Examples:
      mle server start
      mle server start --host 0.0.0.0 --port 8080
      mle server start --foreground
      mle server start --database-url postgresql://user:pw@db/mlengine
    """
    cfg = settings()
    existing = running_server(cfg)
    if existing is not None:
        record, info = existing
        output.status(
            f"An mlengine server is already running at {record['url']} (pid {record.get('pid')}, "
            f"executor {info.get('executor', '?')})."
        )
        click.echo(record["url"])
        return
    cfg.home.mkdir(parents=True, exist_ok=True)
    argv = server_argv(host, port, executor, ray_address, database_url)
    env = dict(os.environ, MLE_HOME=str(cfg.home))
    if foreground:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    log = server_log(cfg.home)
    started = time.time()
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, cwd=str(cfg.home), start_new_session=True, close_fds=True,
        )
    # Starting a local Ray (executor ray without an address) takes a while on a small machine.
    uses_ray = (executor or cfg.executor) == "ray"
    record = wait_until_ready(proc, cfg, started, START_TIMEOUT + (120.0 if uses_ray else 0.0))
    output.status(f"Started the mlengine server (pid {record.get('pid')}); logs in {log}.")
    click.echo(record["url"])


@server.command()
@click.option("--with-ray", is_flag=True,
              help="Also stop the local Ray that `mle server start --executor ray` started "
                   "(without --ray-address); its running jobs' replicas stop with it.")
def stop(with_ray: bool) -> None:
    """Stop the mlengine server recorded under MLE_HOME.

    Sends SIGTERM, waits up to 10 s, then SIGKILL. Running jobs are detached from the
    server and keep running; the server picks them up again when it starts. A local Ray that
    the server started keeps running too, unless --with-ray.

    \b
    Examples:
      mle server stop
      mle server stop --with-ray
    """
    cfg = settings()
    try:
        _stop_server(cfg)
    finally:
        if with_ray:
            from mlengine.jobs.executors.ray_cluster import stop_local_ray

            stopped = stop_local_ray(cfg.ray_dir)
            output.status("Stopped the local Ray cluster." if stopped else "No local Ray cluster was running.")


def _stop_server(cfg: Settings) -> None:
    record = read_server_file(cfg)
    if record is None:
        output.status(f"No mlengine server is running (no {cfg.server_file}).")
        return
    pid = record.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid) or not is_server_process(pid):
        cfg.server_file.unlink(missing_ok=True)
        output.status(f"The mlengine server (pid {pid}) was not running; removed {cfg.server_file}.")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    with output.spinner(f"Stopping the mlengine server (pid {pid})..."):
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    killed = pid_alive(pid)
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
    with contextlib.suppress(MLEngineError):
        left = read_server_file(cfg)
        if left is not None and left.get("pid") == pid:
            cfg.server_file.unlink(missing_ok=True)
    how = f"killed it after {STOP_TIMEOUT:g} s" if killed else "it shut down cleanly"
    output.status(
        f"Stopped the mlengine server (pid {pid}; {how}). Running jobs are detached and keep "
        "running; the server picks them up again when it starts."
    )


@server.command(name="status")
def status_command() -> None:
    """Show whether the server answers, and its URL, version, executor and capacity.

    Talks to MLE_API_URL when set, else to the server recorded under MLE_HOME. Exits 1
    when no server answers (with --format, the status is printed first).

    \b
    Examples:
      mle server status
      mle server status --format json
      mle server status --format 'value(url)'
    """
    cfg = settings()
    record = read_server_file(cfg) if not cfg.api_url else None
    url = cfg.api_url.rstrip("/") if cfg.api_url else (record or {}).get("url")
    pid = (record or {}).get("pid")
    if record is not None and isinstance(pid, int) and not pid_alive(pid):
        output.print_resource({"running": False, "home": str(cfg.home)}, _no_text)
        raise fail(f"No mlengine server is running ({cfg.server_file} is stale: pid {pid} is gone); "
                   "start one with `mle server start`.")
    if not url:
        output.print_resource({"running": False, "home": str(cfg.home)}, _no_text)
        raise fail(f"No mlengine server is running (no {cfg.server_file}); start one with `mle server start`.")
    try:
        info = probe(str(url), resolve_token(cfg))
    except MLEngineError as err:
        output.print_resource({"running": False, "url": url, "error": err.message}, _no_text)
        raise fail(f"The mlengine server at {url} is not answering: {err.message}") from None
    data: dict[str, Any] = {"running": True, "url": url, **info}
    if record and record.get("startedAt"):
        data.setdefault("startedAt", record["startedAt"])
    output.print_resource(data, _status_text)


def _no_text(_data: dict[str, Any]) -> None:
    """Without --format a stopped server is only the error message."""


def _status_text(data: dict[str, Any]) -> None:
    keys = ("url", "version", "executor", "capacitySlots", "hostname", "pid", "home", "startedAt")
    click.echo("\n".join(f"{k + ':':<15}{data[k]}" for k in keys if data.get(k) is not None))
