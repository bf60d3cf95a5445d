"""The ``ray`` replica backend: a version's replicas are Ray actors spread over the cluster.

Each replica is a :class:`~mlengine.prediction.backends.ray_agent.ServingAgent` actor holding
the version's CPUs (its ``machineType``; 1 without one), placed with Ray's ``SPREAD``
strategy so a version's replicas land on different nodes. The actor starts the replica
process on its node (sandboxed, the node's environment allow-listed, never the control
plane's environment or token) listening on TCP; the router connects straight to it and speaks
the same frame protocol as the local backend (:mod:`mlengine.prediction.protocol`), after
proving it knows the version's secret (HMAC-SHA256 of the replica's nonce; the secret derives
from a per-server random key and the version's key, and reaches the replica through a pipe).
Predictions never go through Ray: Ray places, starts and stops.

- Autoscaling and scale to zero are the version pool's (:mod:`mlengine.prediction.pool`), as on
  the local backend. A killed actor or a lost node ends its replica (the replica watches its
  parent) and fails the backend's pending ``watch`` call on the actor: the channel closes,
  pending requests get 503 with Retry-After and the pool starts a replacement wherever Ray
  finds room.
- Actors belong to the control plane's Ray driver (not detached): they end with it, so
  :meth:`RayBackend.reconcile` has nothing to adopt.
- The version's managed directory (``MLE_HOME/models/...``) must be readable at the same path
  on every node (one machine, or a shared filesystem), as for trainers' status files.
- Connecting: ``MLE_RAY_ADDRESS``, else the local Ray that mlengine starts (as the Ray executor).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from mlengine.config import Settings
from mlengine.prediction import jsonio, protocol, sandboxing
from mlengine.prediction.backends._base import (
    ReplicaBackend,
    ReplicaChannel,
    ReplicaOwner,
    ReplicaStartError,
    ReplicaTemplate,
)
from mlengine.prediction.backends.local import LocalReplica
from mlengine.prediction.launcher import ReplicaProcess

log = logging.getLogger("mlengine.serving")
NAMESPACE = "mlengine-serving"
_CONNECT_LOCK = threading.Lock()


def connect_ray(settings: Settings) -> None:
    """Join the cluster (``MLE_RAY_ADDRESS``, else mlengine's local Ray); nothing if this
    process is connected already (the Ray executor got there first). Blocking."""
    if settings.ray_address is None:
        from mlengine.jobs.executors.ray_cluster import ensure_local_ray, security_env

        address, token = ensure_local_ray(settings.ray_dir, settings.ray_num_cpus)
        os.environ.update(security_env(token))  # before Ray is imported: it reads them once
    else:
        address = settings.ray_address
    import ray

    with _CONNECT_LOCK:
        if ray.is_initialized():
            return
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # ConnectionError, auth failures...: say where and why
            raise ReplicaStartError(f"cannot connect to the Ray cluster at {address}: {exc}") from None


class ActorProcess(ReplicaProcess):
    """The replica process behind an actor, as :class:`LocalReplica` drives it."""

    def __init__(self, actor: Any, where: dict[str, Any], log_path: str) -> None:
        super().__init__(int(where["pid"]), f"{where['host']}:{where['port']}", log_path, None, origin="ray")
        self.actor = actor
        self.where = where
        self.description = "running"
        self.killed = False

    def alive(self) -> bool:
        return self.description == "running" and not self.killed

    def signal(self, signum: int) -> None:
        import ray

        if self.killed:
            return
        if signum == signal.SIGKILL:
            self.killed = True
            with contextlib.suppress(Exception):
                ray.kill(self.actor, no_restart=True)
        else:
            self.actor.stop.remote()

    def exit_description(self) -> str:
        return self.description


class RayReplica(LocalReplica):
    """A replica over TCP: answers the replica's nonce, then speaks the frame protocol."""

    def __init__(self, owner: ReplicaOwner, process: ActorProcess, secret: bytes) -> None:
        super().__init__(owner, process)
        self.actor_process = process
        self.secret = secret
        self.challenge = bytearray()
        self.authenticated = False
        self.watcher: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        if not self.authenticated:
            self.challenge += data
            if len(self.challenge) < protocol.NONCE_SIZE:
                return
            nonce, rest = bytes(self.challenge[:protocol.NONCE_SIZE]), bytes(self.challenge[protocol.NONCE_SIZE:])
            self.transport.write(protocol.answer(self.secret, nonce))
            self.authenticated = True
            if not rest:
                return
            data = rest
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.watcher is not None:
            self.watcher.cancel()
        if self.actor_process.description == "running":
            self.loop.create_task(self._learn_exit())

    async def _learn_exit(self) -> None:
        """Ask the actor how the replica ended (the conformance of ``describe_exit``)."""
        process = self.actor_process
        try:
            if process.killed:
                raise RuntimeError("killed")
            description = await asyncio.wait_for(_await(process.actor.describe.remote()), 10)
            if description == "running":
                await asyncio.sleep(0.5)
                description = await asyncio.wait_for(_await(process.actor.describe.remote()), 10)
        except Exception:  # the actor is gone: killed, or its node left the cluster
            description = "its Ray actor is gone (killed, or its node left the cluster)"
        process.description = description if description != "running" else "exited"


async def _await(ref: Any) -> Any:
    return await ref


class RayBackend(ReplicaBackend):
    """Replicas as Ray actors on the cluster's nodes, reached over authenticated TCP."""

    name: ClassVar[str] = "ray"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key = secrets.token_bytes(32)  # per control plane: versions' secrets derive from it
        self.tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._agent_class: Any = None
        self._live: set[RayReplica] = set()
        self._actors: dict[str, Any] = {}

    def secret_of(self, template: ReplicaTemplate) -> bytes:
        return hmac.new(self._key, template.key.encode(), hashlib.sha256).digest()

    async def _agent(self) -> Any:
        if self._agent_class is None:
            await asyncio.to_thread(connect_ray, self.settings)
            import ray

            from mlengine.prediction.backends.ray_agent import ServingAgent

            remote: Any = ray.remote  # the executor's way: Ray's overloads do not type a class decorator
            self._agent_class = remote(max_restarts=0, max_concurrency=4)(ServingAgent)
        return self._agent_class

    async def start_replica(self, template: ReplicaTemplate, owner: ReplicaOwner) -> ReplicaChannel:
        import ray

        agent_class = await self._agent()
        number = next(self._counter)
        name = f"mle-replica-{self.tag}-{number}"
        private = self.settings.serving_dir / sandboxing.PRIVATE_DIR / f"ray-{self.tag}-{number}"
        policy = sandboxing.replica_policy(self.settings, template.config.model_dir, template.config.pythonpath,
                                           private)
        home, tmp = sandboxing.private_dirs(private)
        extra = {"HOME": str(home), "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
        if template.config.pythonpath:
            extra["PYTHONPATH"] = os.pathsep.join(template.config.pythonpath)
        from mlengine.jobs.sandboxing import inherited_env

        log_path = str(template.root / "logs" / f"replica-{int(time.time())}-ray-{number}.log")
        actor = agent_class.options(name=name, namespace=NAMESPACE, num_cpus=template.cpus or 1,
                                    scheduling_strategy="SPREAD").remote()
        self._actors[name] = actor
        secret = self.secret_of(template)
        try:
            where = await asyncio.wait_for(_await(actor.start.remote(
                template.config.to_json(), secret, str(private / "work"), log_path, extra,
                list(inherited_env(self.settings)), policy.to_json() if policy.landlock else None,
            )), template.start_timeout)
            replica = RayReplica(owner, ActorProcess(actor, where, log_path), secret)
            await self._connect(template, replica, where)
        except BaseException as err:
            self._actors.pop(name, None)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            if isinstance(err, asyncio.TimeoutError):
                raise ReplicaStartError(f"no Ray node started the replica within {template.start_timeout:g} s "
                                        "(MLE_SERVING_START_TIMEOUT): the cluster has no free CPUs?") from None
            if isinstance(err, ray.exceptions.RayError):
                raise ReplicaStartError(f"the replica's Ray actor failed: {str(err).splitlines()[0]}") from None
            raise
        self._live.add(replica)
        replica.on_close = lambda _r: self._closed(name, replica)
        replica.watcher = asyncio.get_running_loop().create_task(self._watch(actor, replica))
        return replica

    async def _watch(self, actor: Any, replica: RayReplica) -> None:
        """Close the channel when the actor dies or its replica ends, whatever TCP says (a lost
        node's connection can stay open for minutes): pending requests get 503 and the pool
        replaces the replica."""
        try:
            description = str(await _await(actor.watch.remote()))
        except asyncio.CancelledError:
            raise
        except Exception:
            description = "its Ray actor is gone (killed, or its node left the cluster)"
        if not replica.closed and not replica.stopping:
            replica.actor_process.description = description
            log.warning("a replica on %s ended: %s", replica.actor_process.where.get("host"), description)
            if replica.transport is not None:
                replica.transport.abort()

    def _closed(self, name: str, replica: RayReplica) -> None:
        import ray

        self._live.discard(replica)
        actor = self._actors.pop(name, None)
        if actor is not None:  # the replica is gone: its actor has nothing left to do
            asyncio.get_running_loop().call_later(1.0, _kill_quietly, ray, actor)

    async def _connect(self, template: ReplicaTemplate, replica: RayReplica, where: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + template.start_timeout
        while True:
            try:
                await loop.create_connection(lambda: replica, where["host"], int(where["port"]))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ReplicaStartError(f"the replica on {where['host']} did not accept connections") from None
                await asyncio.sleep(0.05)
        try:
            kind, payload = await asyncio.wait_for(replica.greeting, max(1.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            replica.stop(0.1)
            raise ReplicaStartError(f"the model did not load within {template.start_timeout:g} s "
                                    "(MLE_SERVING_START_TIMEOUT)") from None
        if kind != protocol.READY:
            replica.stop(1.0)
            raise ReplicaStartError(payload.decode(errors="replace") or "the replica exited before loading the "
                                    f"model (see {replica.process.log_path} on {where['host']})")
        replica.info = {**jsonio.loads(payload), "host": where["host"], "nodeId": where["nodeId"]}

    async def reconcile(self, templates: Iterable[ReplicaTemplate]) -> None:
        """Actors end with the control plane that created them: nothing to adopt."""

    async def close(self) -> None:
        import ray

        actors, self._actors = list(self._actors.values()), {}
        for replica in list(self._live):
            replica.stop(1.0)
        self._live.clear()
        if actors:
            await asyncio.sleep(0.2)  # let the replicas see their connection close
        for actor in actors:
            _kill_quietly(ray, actor)

    def leftovers(self) -> list[str]:
        """Named actors of this backend still alive (for tests)."""
        import ray

        names = [a["name"] if isinstance(a, dict) else str(a) for a in ray.util.list_named_actors(all_namespaces=True)]
        return [n for n in names if n.startswith(f"mle-replica-{self.tag}-")]


def _kill_quietly(ray: Any, actor: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
