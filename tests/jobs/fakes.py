"""A fake executor for the scheduler's unit tests: replicas are entries in a dict whose exits
the test decides; signals are recorded (SIGTERM/SIGKILL end a replica)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from mlengine.jobs.executors import Executor, Placement, ReplicaLaunch, ReplicaRequest, ReplicaSpec, ReplicaStatus
from mlengine.jobs.resources import Capacity, Resources


class FakeExecutor(Executor):
    name = "fake"

    def __init__(self, cpus: float = 2.0, ignore_term: bool = False) -> None:
        self.cpus = cpus
        self.ignore_term = ignore_term
        self.statuses: dict[int, ReplicaStatus] = {}
        self.launches: list[ReplicaLaunch] = []
        self.signals: list[tuple[int, int]] = []
        self.released: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def capacity(self) -> Capacity:
        total = Resources(self.cpus, 64, 0)
        return Capacity(total, [total], "the fake executor")

    def resource_mode(self) -> str:
        return "machine"

    def place(self, job_key: str, requests: list[ReplicaRequest], port_range: tuple[int, int]) -> Placement:
        specs = [ReplicaSpec(r.task_type, r.index, "127.0.0.1", 20000 + i) for i, r in enumerate(requests)]
        return Placement(specs, {"job": job_key})

    def release(self, reservation: dict[str, Any]) -> None:
        self.released.append(reservation)

    def launch(self, launch: ReplicaLaunch) -> dict[str, Any]:
        with self._lock:
            self.launches.append(launch)
            pid = len(self.launches)
            self.statuses[pid] = ReplicaStatus("running")
        return {"pid": pid}

    def poll(self, handle: dict[str, Any]) -> ReplicaStatus:
        with self._lock:
            return self.statuses[int(handle["pid"])]

    def signal(self, handle: dict[str, Any], signum: int) -> None:
        pid = int(handle["pid"])
        with self._lock:
            self.signals.append((pid, signum))
            if self.statuses[pid].finished:
                return
            if signum == signal.SIGKILL or (signum == signal.SIGTERM and not self.ignore_term):
                self.statuses[pid] = ReplicaStatus("exited", -signum)

    def exit(self, pid: int, code: int) -> None:
        with self._lock:
            self.statuses[pid] = ReplicaStatus("exited", code)

    def vanish(self, pid: int) -> None:
        with self._lock:
            self.statuses[pid] = ReplicaStatus("lost", None, "its process vanished")
