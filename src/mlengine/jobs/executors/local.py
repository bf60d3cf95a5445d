"""Local executor: every replica is a supervisor process plus the trainer, in their own
session on this machine (see :mod:`mlengine.jobs.executors.supervisor`), with an allow-listed
environment; the supervisor confines the trainer as ``launch.sandbox`` says.

Capacity: ``MLE_CAPACITY_SLOTS`` CPUs (default: the number of CPUs), the machine's memory,
and ``MLE_LOCAL_GPUS`` GPUs (default: what ``nvidia-smi -L`` lists); in ``process`` resource
mode a job needing more CPU slots than that runs alone, oversubscribed. Replicas listen on
127.0.0.1 on ports held by :func:`mlengine.jobs.ports.reserve_ports` until launch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.core import processes
from mlengine.core.processes import proc_start_ticks
from mlengine.core.sandbox import replica_environment
from mlengine.jobs.executors._base import Executor, ReplicaLaunch, ReplicaStatus
from mlengine.jobs.resources import Capacity, machine_capacity


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def capacity(self) -> Capacity:
        # Processes on one machine share its CPUs: a job larger than the slots runs when it
        # can run alone (see mlengine.jobs.capacity). Machine mode keeps its machine types whole.
        return replace(machine_capacity(self.settings), oversubscribable=self.resource_mode() == "process")

    def launch(self, launch: ReplicaLaunch) -> dict[str, Any]:
        if launch.placement is not None and launch.placement.ports is not None:
            port = launch.placement.replicas[launch.position].port
            launch.placement.ports.release(port)  # the trainer binds it from now on
        launch.cwd.mkdir(parents=True, exist_ok=True)
        launch.log_file.parent.mkdir(parents=True, exist_ok=True)
        launch.status_file.parent.mkdir(parents=True, exist_ok=True)
        env = replica_environment(os.environ, launch.env, launch.inherit_env)
        argv = [
            sys.executable, "-I", "-m", "mlengine.jobs.executors.supervisor",
            "--task-name", launch.task_name,
            "--log-file", str(launch.log_file),
            "--status-file", str(launch.status_file),
            "--cwd", str(launch.cwd),
            *(["--sandbox", launch.sandbox.to_json()] if launch.sandbox is not None else []),
            "--", *launch.argv,
        ]
        supervisor_log = launch.status_file.with_suffix(".supervisor.log")
        with open(supervisor_log, "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=launch.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, close_fds=True,
            )
        self._children[proc.pid] = proc
        threading.Thread(target=self._wait_and_notify, args=(proc,), daemon=True,
                         name=f"mle-wait-{proc.pid}").start()
        ticks = proc_start_ticks(proc.pid)
        return {
            "pid": proc.pid,
            "pgid": proc.pid,
            "startTicks": ticks[0] if ticks else None,
            "statusFile": str(launch.status_file),
            "logFile": str(launch.log_file),
        }

    def _wait_and_notify(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        if self.notify is not None:
            self.notify()

    def _read_status(self, handle: dict[str, Any]) -> ReplicaStatus | None:
        path = Path(handle["statusFile"])
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return ReplicaStatus("lost", None, f"its exit status file {path} is unreadable")
        return ReplicaStatus("exited", int(status["exitCode"]), status.get("message", ""))

    def _alive(self, handle: dict[str, Any]) -> bool:
        pid = int(handle["pid"])
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            self._children.pop(pid, None)
            return False
        info = proc_start_ticks(pid)
        if info is None:
            return False
        ticks, state = info
        if state in ("Z", "X"):
            return False
        return handle.get("startTicks") is None or ticks == handle["startTicks"]

    def poll(self, handle: dict[str, Any]) -> ReplicaStatus:
        status = self._read_status(handle)
        if status is not None:
            self._reap(handle)
            return status
        if self._alive(handle):
            return ReplicaStatus("running")
        # The supervisor may have written its status just before exiting.
        status = self._read_status(handle)
        if status is not None:
            return status
        return ReplicaStatus(
            "lost", None,
            "its process vanished without an exit status (it was killed, or the machine restarted)",
        )

    def _reap(self, handle: dict[str, Any]) -> None:
        child = self._children.get(int(handle["pid"]))
        if child is not None and child.poll() is not None:
            self._children.pop(int(handle["pid"]), None)

    def signal(self, handle: dict[str, Any], signum: int) -> None:
        processes.signal_group(int(handle["pgid"]), signum)

    def group_alive(self, handle: dict[str, Any]) -> bool:
        """Whether any process of the replica's group is still alive (our own zombie children
        are reaped first)."""
        self._reap(handle)
        return processes.group_alive(int(handle["pgid"]))

    def close(self) -> None:
        self._children.clear()
