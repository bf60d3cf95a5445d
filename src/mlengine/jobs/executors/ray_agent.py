"""The Ray actor that owns one replica on its node: a thin shell around the supervisor.

The Ray executor creates one detached, named ``ReplicaAgent`` per replica inside the job's
placement group (so it holds the replica's CPUs, memory and GPUs on that node). The agent:

1. :meth:`ReplicaAgent.reserve` holds a free port on its node and reports where it is (node
   address, node id, host name), so the control plane can write the cluster spec;
2. :meth:`ReplicaAgent.start` lets the port go and starts the usual supervisor
   (``python -I -m mlengine.jobs.executors.supervisor --exit-with-parent --sandbox POLICY``)
   in its own session, with the node's environment allow-listed: logs as JSON lines, the exit
   status file and the trainer's sandbox, exactly as on the local executor;
3. answers :meth:`poll` (with the exit status as the node sees it, so it comes back even
   where the control plane does not share the node's filesystem), :meth:`signal` and
   :meth:`group_alive` for the control plane, from any (restarted) control-plane process that
   looks it up by name.

If the agent dies (``ray.kill``, placement group removed, node lost), the supervisor notices
that its parent is gone, records exit status -9 with the reason and kills the trainer.

This module imports nothing from Ray at import time; workers import it by name, so mlengine
must be installed on every node.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlengine.core import processes


def clean_environment(extra: dict[str, str], inherit: Sequence[str] | None = None) -> dict[str, str]:
    """Of the node's environment only what ``inherit`` names (never Ray's own variables: no
    cluster token for user code), plus the replica's. ``CUDA_VISIBLE_DEVICES`` that Ray set for
    the agent's GPUs passes."""
    from mlengine.core.sandbox import INHERITED_ENV, replica_environment

    allowed = tuple(inherit) if inherit is not None else INHERITED_ENV
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return replica_environment(base, extra, allowed)


def node_policy(policy_json: str) -> str:
    """The control plane's sandbox policy plus what only this node knows: its Ray auth token."""
    import dataclasses

    from mlengine.core.sandbox import SandboxPolicy

    policy = SandboxPolicy.from_json(policy_json)
    token = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token and policy.landlock:
        policy = dataclasses.replace(policy, hidden=(*policy.hidden, token))
    return policy.to_json()


class ReplicaAgent:
    def __init__(self) -> None:
        self._reservation: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._status_file: str | None = None
        self._log_file: str | None = None

    def reserve(self, low: int, high: int) -> dict[str, Any]:
        import ray

        from mlengine.jobs.ports import reserve_ports

        self._reservation = reserve_ports(1, (low, high))
        return {
            "host": ray.util.get_node_ip_address(),
            "port": self._reservation.ports[0],
            "nodeId": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "agentPid": os.getpid(),
        }

    def start(self, argv: list[str], env: dict[str, str], cwd: str, log_file: str,
              status_file: str, task_name: str, sandbox: str | None = None,
              inherit_env: Sequence[str] | None = None) -> dict[str, Any]:
        if self._proc is not None:  # a retried call: the replica already runs
            return {"pid": self._proc.pid}
        if self._reservation is not None:
            self._reservation.release()
        for path in (Path(cwd), Path(log_file).parent, Path(status_file).parent):
            path.mkdir(parents=True, exist_ok=True)
        if sandbox:
            sandbox = node_policy(sandbox)
        command = [
            sys.executable, "-I", "-m", "mlengine.jobs.executors.supervisor",
            "--task-name", task_name, "--log-file", log_file, "--status-file", status_file,
            "--cwd", cwd, "--exit-with-parent", *(["--sandbox", sandbox] if sandbox else []), "--", *argv,
        ]
        with open(Path(status_file).with_suffix(".supervisor.log"), "ab") as out:
            self._proc = subprocess.Popen(
                command, cwd=cwd, env=clean_environment(env, inherit_env), stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True, close_fds=True,
            )
        self._status_file, self._log_file = status_file, log_file
        return {"pid": self._proc.pid}

    def _status(self) -> dict[str, Any] | None:
        if not self._status_file:
            return None
        try:
            return dict(json.loads(Path(self._status_file).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"unreadable": str(exc)}

    def poll(self) -> dict[str, Any]:
        """``{"running": bool, "status": the status file or None, "started": bool}``."""
        if self._proc is None:
            return {"running": False, "status": None, "started": False}
        running = self._proc.poll() is None
        return {"running": running, "status": self._status(), "started": True}

    def signal(self, signum: int) -> None:
        if self._proc is not None:
            processes.signal_group(self._proc.pid, signum)

    def group_alive(self) -> bool:
        if self._proc is None:
            return False
        self._proc.poll()  # reap the supervisor if it exited
        return processes.group_alive(self._proc.pid)

    def node(self) -> dict[str, Any]:
        import ray

        return {"nodeId": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}
