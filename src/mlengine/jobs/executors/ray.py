"""Ray executor: a job's replicas are Ray actors, gang-scheduled with a placement group.

Contract (on top of :mod:`mlengine.jobs.executors._base`)
-------------------------------------------------------------
- :meth:`RayExecutor.place` creates one *detached, named* placement group per job with one
  bundle per replica (its machine type's CPUs, GPUs and, in ``machine`` mode, memory) and
  waits until Ray reserved all of them (all or nothing), then one detached, named
  :class:`~mlengine.jobs.executors.ray_agent.ReplicaAgent` per bundle, each of which
  holds a port on its node. Names derive from the server (a hash of ``MLE_HOME``), the
  project, the job and the task, so a restarted control plane finds everything by name.
- :meth:`launch` asks the replica's agent to start the supervisor (with the replica's sandbox
  policy and environment allow-list, applied on the node); the handle is
  ``{"actor", "namespace", "statusFile", "logFile", "nodeId", "host"}``.
- :meth:`poll` reads the status file when the control plane sees it (one machine, or a shared
  filesystem) and otherwise asks the agent (at most once a second per replica); an agent that
  is gone is a lost replica. :meth:`signal` and :meth:`group_alive` go through the agent.
- :meth:`release` kills the agents (their supervisors then kill the trainers) and removes the
  placement group: cancel and job end free every resource. Idempotent.
- Connecting: ``MLE_RAY_ADDRESS`` (``--ray-address``), else the local Ray that mlengine starts
  on 127.0.0.1 with token auth (:mod:`mlengine.jobs.executors.ray_cluster`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal as signals
import time
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError
from mlengine.jobs.executors._base import (
    Executor,
    Placement,
    ReplicaLaunch,
    ReplicaRequest,
    ReplicaSpec,
    ReplicaStatus,
)
from mlengine.jobs.resources import Capacity, Resources

log = logging.getLogger("mlengine.executor.ray")
NAMESPACE = "mlengine"
RPC_TIMEOUT = 30.0
POLL_EVERY = 1.0
GB = 1024**3


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_local = not settings.ray_address
        self.prefix = "mle-" + hashlib.sha256(str(settings.home).encode()).hexdigest()[:8]
        self._last_poll: dict[str, tuple[float, ReplicaStatus]] = {}
        self._capacity: tuple[float, Capacity] | None = None
        self._agent_class: Any = None
        self.address = ""
        self.connect()

    # Connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        import os

        address = self.settings.ray_address
        if not address:
            from mlengine.jobs.executors.ray_cluster import ensure_local_ray, security_env

            address, token = ensure_local_ray(self.settings.ray_dir, self.settings.ray_num_cpus)
            os.environ.update(security_env(token))  # before Ray is imported: it reads them once
        self.address = address
        import ray

        remote: Any = ray.remote
        if ray.is_initialized():
            self._agent_class = remote(max_restarts=0, max_concurrency=4)(_agent_type())
            return
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                     logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, auth failures...: say where and why
            raise MLEngineError(Code.FAILED_PRECONDITION,
                                f"Cannot connect to the Ray cluster at {address}: {exc}") from None
        self._agent_class = remote(max_restarts=0, max_concurrency=4)(_agent_type())

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    # Capacity -----------------------------------------------------------------------------
    def resource_mode(self) -> str:
        mode = self.settings.resource_mode
        if mode != "auto":
            return mode
        return "process" if self.started_local else "machine"

    def capacity(self) -> Capacity:
        import ray

        now = time.monotonic()
        if self._capacity and now - self._capacity[0] < 2.0:
            return self._capacity[1]
        nodes = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            res = node.get("Resources", {})
            nodes.append(Resources(float(res.get("CPU", 0)), round(float(res.get("memory", 0)) / GB, 2),
                                   int(res.get("GPU", 0))))
        total = Resources()
        for n in nodes:
            total = total + n
        cap = Capacity(total, nodes, f"the Ray cluster at {self.address} ({len(nodes)} node(s))")
        self._capacity = (now, cap)
        return cap

    # Placement ----------------------------------------------------------------------------
    def _names(self, job_key: str) -> str:
        """Base name of the job's placement group and agents; ``/`` (tuning trials are
        ``JOB/trials/N``) becomes ``.``, which job ids never contain."""
        project, job_id = job_key.split("/", 1)
        return f"{self.prefix}-{project}-{job_id}".replace("/", ".")

    def _bundle(self, resources: Resources) -> dict[str, float]:
        bundle: dict[str, float] = {"CPU": max(resources.cpus, 0.01)}
        if resources.gpus:
            bundle["GPU"] = float(resources.gpus)
        if resources.memory_gb:
            bundle["memory"] = float(int(resources.memory_gb * GB))
        return bundle

    def place(self, job_key: str, requests: list[ReplicaRequest], port_range: tuple[int, int]) -> Placement:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        base = self._names(job_key)
        self.release({"placementGroup": base, "actors": [f"{base}-{r.task_type}-replica-{r.index}"
                                                         for r in requests]})  # leftovers of a crash
        bundles = [self._bundle(r.resources) for r in requests]
        group = placement_group(bundles, strategy=self.settings.ray_placement_strategy, name=base,
                                lifetime="detached")
        timeout = self.settings.ray_placement_timeout_seconds
        ready, _ = ray.wait([group.ready()], timeout=timeout)
        if not ready:
            remove_placement_group(group)
            raise MLEngineError(Code.UNAVAILABLE, (
                f"Ray could not place all {len(requests)} replicas ({bundles}) within {timeout:g} s "
                f"(MLE_RAY_PLACEMENT_TIMEOUT): the cluster is busy with other work, or no node "
                "has what a replica needs."))
        names = [f"{base}-{r.task_type}-replica-{r.index}" for r in requests]
        reservation: dict[str, Any] = {"placementGroup": base, "namespace": NAMESPACE, "actors": names}
        try:
            agents = []
            for i, name in enumerate(names):
                agents.append(self._agent_class.options(
                    name=name, namespace=NAMESPACE, lifetime="detached",
                    num_cpus=bundles[i]["CPU"], num_gpus=bundles[i].get("GPU", 0),
                    memory=bundles[i].get("memory"),
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=group, placement_group_bundle_index=i),
                ).remote())
            where = ray.get([a.reserve.remote(*port_range) for a in agents], timeout=120)
        except Exception as exc:
            self.release(reservation)
            raise MLEngineError(Code.UNAVAILABLE, f"Ray could not start the job's replica agents: {exc}") from None
        specs = [ReplicaSpec(r.task_type, r.index, w["host"], int(w["port"]))
                 for r, w in zip(requests, where, strict=True)]
        reservation["nodes"] = {name: w["nodeId"] for name, w in zip(names, where, strict=True)}
        return Placement(specs, reservation, None)

    def release(self, reservation: dict[str, Any]) -> None:
        import ray
        from ray.util.placement_group import get_placement_group, remove_placement_group

        namespace = reservation.get("namespace", NAMESPACE)
        agents = []
        for name in reservation.get("actors", []):
            try:
                agents.append(ray.get_actor(name, namespace=namespace))
            except ValueError:
                continue  # never created, or already gone
        if agents:  # SIGKILL the replicas first; killing the agents alone would leave it to the supervisors
            refs: list[Any] = [a.signal.remote(int(signals.SIGKILL)) for a in agents]
            ray.wait(refs, num_returns=len(refs), timeout=10)
            for agent in agents:
                ray.kill(agent, no_restart=True)
        name = reservation.get("placementGroup")
        if name:
            try:
                group = get_placement_group(name)
            except ValueError:
                return
            remove_placement_group(group)

    # Replicas -----------------------------------------------------------------------------
    def _agent(self, handle: dict[str, Any]) -> Any:
        import ray

        return ray.get_actor(handle["actor"], namespace=handle.get("namespace", NAMESPACE))

    def launch(self, launch: ReplicaLaunch) -> dict[str, Any]:
        import ray

        if launch.placement is None:
            raise MLEngineError(Code.INTERNAL, "the Ray executor launches only placed replicas")
        reservation = launch.placement.reservation
        name = reservation["actors"][launch.position]
        agent = ray.get_actor(name, namespace=reservation["namespace"])
        sandbox = launch.sandbox.to_json() if launch.sandbox is not None else None
        ref: Any = agent.start.remote(launch.argv, launch.env, str(launch.cwd), str(launch.log_file),
                                      str(launch.status_file), launch.task_name, sandbox,
                                      list(launch.inherit_env))
        started: dict[str, Any] = ray.get(ref, timeout=RPC_TIMEOUT)
        spec = launch.placement.replicas[launch.position]
        return {
            "actor": name, "namespace": reservation["namespace"], "remotePid": started["pid"],
            "statusFile": str(launch.status_file), "logFile": str(launch.log_file),
            "nodeId": reservation.get("nodes", {}).get(name), "host": spec.host, "port": spec.port,
        }

    def _status_from_file(self, handle: dict[str, Any]) -> ReplicaStatus | None:
        import json

        try:
            status = json.loads(Path(handle["statusFile"]).read_text())
        except (FileNotFoundError, KeyError):
            return None
        except (OSError, ValueError):
            return None  # being written, or unreadable: ask the agent
        return ReplicaStatus("exited", int(status["exitCode"]), status.get("message", ""))

    def poll(self, handle: dict[str, Any]) -> ReplicaStatus:
        from_file = self._status_from_file(handle)
        if from_file is not None:
            return from_file
        key = handle["actor"]
        cached = self._last_poll.get(key)
        if cached and time.monotonic() - cached[0] < POLL_EVERY:
            return cached[1]
        status = self._ask(handle)
        if status.finished:
            self._last_poll.pop(key, None)
        else:
            self._last_poll[key] = (time.monotonic(), status)
        return status

    def _ask(self, handle: dict[str, Any]) -> ReplicaStatus:
        import ray

        try:
            answer = ray.get(self._agent(handle).poll.remote(), timeout=RPC_TIMEOUT)
        except ValueError:
            return self._status_from_file(handle) or ReplicaStatus(
                "lost", None, "its Ray actor is gone (killed, or its node left the cluster)")
        except ray.exceptions.GetTimeoutError:
            return ReplicaStatus("running")  # busy node: ask again later
        except ray.exceptions.RayError as exc:
            return self._status_from_file(handle) or ReplicaStatus(
                "lost", None, f"its Ray actor died: {str(exc).splitlines()[0]}")
        status = answer.get("status")
        if status and "exitCode" in status:
            return ReplicaStatus("exited", int(status["exitCode"]), status.get("message", ""))
        if answer.get("running"):
            return ReplicaStatus("running")
        return ReplicaStatus("lost", None, "its process vanished without an exit status")

    def signal(self, handle: dict[str, Any], signum: int) -> None:
        import ray

        with contextlib.suppress(ValueError, ray.exceptions.RayError):  # gone already: nothing to signal
            ray.get(self._agent(handle).signal.remote(int(signum)), timeout=RPC_TIMEOUT)

    def group_alive(self, handle: dict[str, Any]) -> bool:
        import ray

        try:
            return bool(ray.get(self._agent(handle).group_alive.remote(), timeout=RPC_TIMEOUT))
        except (ValueError, ray.exceptions.RayError):
            return False


def _agent_type() -> type:
    from mlengine.jobs.executors.ray_agent import ReplicaAgent

    return ReplicaAgent
