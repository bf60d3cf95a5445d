"""Operating-system side of services: gated launches, liveness, signals, health probes, logs.

A service process is launched *gated*: ``/bin/sh`` waits for one line on its stdin before it
``exec``\\ s the service's argv (same pid, same start time). The manager records the durable
handle (pid, start ticks, port, log file) in the store and only then opens the gate, so no
service code ever runs without a handle a restarted server can find. If the server dies before
opening the gate, the pipe closes and the shell exits with :data:`GATE_EXIT_CODE` instead.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.core import processes
from mlengine.core.processes import proc_start_ticks

GATE_EXIT_CODE = 97
_GATE = f'read -r _ || exit {GATE_EXIT_CODE}; exec "$@"'


def service_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The server's environment without any ``MLE_*`` variable (no token, no database URL
    reaches a service), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLE_")}
    env.update(extra)
    return env


def spawn_gated(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, held at the gate until :func:`open_gate`."""
    if not argv:
        raise ValueError("a service command needs a non-empty argv")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            ["/bin/sh", "-c", _GATE, "mle-service", *argv], cwd=cwd, env=dict(env),
            stdin=subprocess.PIPE, stdout=out, stderr=out, start_new_session=True, close_fds=True,
        )


def open_gate(proc: subprocess.Popen[bytes]) -> None:
    """Let a gated process ``exec`` its command."""
    if proc.stdin is None:
        return
    with contextlib.suppress(OSError):
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    with contextlib.suppress(OSError):
        proc.stdin.close()


def is_alive(handle: Mapping[str, Any], child: subprocess.Popen[bytes] | None) -> bool:
    """Whether the process of ``handle`` still runs: our own child is polled (and reaped);
    any other pid must still have the recorded start time (a reused pid is not ours)."""
    pid = handle.get("pid")
    if pid is None:
        return False
    if child is not None and child.pid == pid:
        return child.poll() is None
    info = proc_start_ticks(int(pid))
    if info is None:
        return False
    ticks, state = info
    if state in ("Z", "X"):
        return False
    recorded = handle.get("startTicks")
    return recorded is None or ticks == recorded


def exit_code(handle: Mapping[str, Any], child: subprocess.Popen[bytes] | None) -> int | None:
    """The exit status if the process was our child (an adopted one's is unknowable)."""
    if child is not None and child.pid == handle.get("pid"):
        return child.poll()
    return None


def signal_group(handle: Mapping[str, Any], signum: int) -> None:
    pgid = handle.get("pgid")
    if pgid is not None:
        processes.signal_group(int(pgid), signum)


def group_alive(handle: Mapping[str, Any], child: subprocess.Popen[bytes] | None) -> bool:
    """Whether any live (not zombie) process of the handle's group remains."""
    pgid = handle.get("pgid")
    if pgid is None:
        return False
    if child is not None:
        child.poll()  # reap our own child
    return processes.group_alive(int(pgid))


def kill_group(handle: Mapping[str, Any], child: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL whatever is left of the handle's group and reap our child."""
    signal_group(handle, signal.SIGKILL)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=2)


def probe(port: int, path: str, timeout: float, headers: Mapping[str, str] | None = None) -> int | None:
    """GET ``path`` on 127.0.0.1:``port`` (with the kind's upstream ``headers``); the status
    code, or None if nothing answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "mlengine-health-check", **(headers or {})})
        response = conn.getresponse()
        response.read(65536)
        return int(response.status)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def log_tail(path: Path, offset: int = 0, lines: int = 20, max_chars: int = 3000) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``offset`` (at most ``max_chars``)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - 64 * 1024)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    tail = "\n".join(line for line in text.splitlines()[-lines:])
    return tail[-max_chars:].strip()
