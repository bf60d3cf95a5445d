"""The Ray actor that owns one model replica on its node (the ``ray`` replica backend).

The backend creates one ``ServingAgent`` per replica, with the version's CPUs, spread over the
cluster's nodes. :meth:`ServingAgent.start`:

1. listens on a free TCP port of its node's address;
2. starts the replica process (``python -m mlengine.prediction.replica --listen-fd ...``) in
   its own session with that socket, the version's secret through a pipe (never the
   environment), the node's environment allow-listed (no ``RAY_*`` variable, so no cluster
   token; nothing of the control plane's), and the replica's sandbox, to which the node adds
   its Ray token file as hidden;
3. reports ``{"host", "port", "pid", "nodeId"}``: the router connects to the replica directly
   and proves it knows the secret (HMAC of a nonce, :mod:`mlengine.prediction.protocol`);
   predictions never go through Ray.

The replica exits when the agent is gone (``--parent``: a killed actor or a lost node ends its
replica), when its router connection closes, or on :meth:`ServingAgent.stop`. This module
imports nothing from Ray at import time; workers import it by name, so mlengine must be
installed on every node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlengine.core import processes


class ServingAgent:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._where: dict[str, Any] = {}

    def start(self, config: dict[str, Any], secret: bytes, work_dir: str, log_file: str,
              extra_env: dict[str, str], inherit_env: Sequence[str], sandbox: str | None) -> dict[str, Any]:
        import ray

        from mlengine.jobs.executors.ray_agent import clean_environment, node_policy

        if self._proc is not None:  # a retried call: the replica already runs
            return self._where
        host = ray.util.get_node_ip_address()
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        config_path = work / "replica.json"
        config_path.write_text(json.dumps(config))
        if sandbox:
            from mlengine.core.sandbox import SandboxPolicy

            sandbox = node_policy(sandbox)
            SandboxPolicy.from_json(sandbox).make_private_dirs()
        listener = socket.create_server((host, 0))
        port = int(listener.getsockname()[1])
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, secret)
            os.close(write_end)
            command = [sys.executable, "-m", "mlengine.prediction.replica", "--config", str(config_path),
                       "--listen-fd", str(listener.fileno()), "--secret-fd", str(read_end),
                       "--parent", str(os.getpid()), *(["--sandbox", sandbox] if sandbox else [])]
            home = extra_env.get("HOME") or str(work)
            Path(home).mkdir(parents=True, exist_ok=True)
            with open(log_file, "ab") as out:
                self._proc = subprocess.Popen(
                    command, cwd=home, env=clean_environment(extra_env, inherit_env), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=out, start_new_session=True, pass_fds=(listener.fileno(), read_end),
                )
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.close(read_end)
        self._where = {"host": host, "port": port, "pid": self._proc.pid,
                       "nodeId": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}
        return self._where

    def where(self) -> dict[str, Any]:
        """``{"host", "port", "pid", "nodeId", "hostname"}`` of the replica (empty before start)."""
        return dict(self._where)

    def watch(self) -> str:
        """Returns once the replica process ended (how it ended). The backend keeps one call
        pending: it fails when the actor dies (killed, or its node lost), so the router learns
        of either without waiting for TCP to notice."""
        while self._proc is not None and self._proc.poll() is None:
            time.sleep(0.5)
        return self.describe()

    def describe(self) -> str:
        """How the replica ended (``exit code 1``, ``killed by SIGKILL``) or ``running``."""
        if self._proc is None:
            return "not started"
        code = self._proc.poll()
        if code is None:
            return "running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self, kill_after: float = 3.0) -> str:
        """SIGTERM the replica's session, SIGKILL after ``kill_after`` seconds; how it ended."""
        if self._proc is None:
            return "not started"
        processes.signal_group(self._proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + kill_after
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._proc.poll() is None:
            processes.signal_group(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        return self.describe()
