"""The replicas of one version, as the router sees them: dispatch, cold starts, crashes, scaling.

Contract
--------
- Everything runs on the control plane's event loop; nothing here blocks.
- :meth:`VersionPool.predict` forwards a raw request body to the least busy ready replica
  (through its :class:`~mlengine.prediction.backends.ReplicaChannel`; the
  :class:`~mlengine.prediction.backends.ReplicaBackend` starts replicas and connects them) and
  returns ``(status, body, headers)``. It never hangs: a replica that
  crashes fails its requests with 503; a request past ``MLE_PREDICT_TIMEOUT`` gets 504 (and
  the replica, considered stuck, is replaced); more than ``MLE_PREDICT_QUEUE_LIMIT`` requests
  in flight per replica get 429 at once. With no replica (scaled to zero, or all crashed) the
  request starts one and waits for it (cold start).
- :meth:`VersionPool.tick` (called every few hundred milliseconds by the manager) applies the
  :class:`Scaling` policy: ``manualScaling.nodes`` fixed; otherwise between ``minNodes`` and
  ``maxNodes`` following the time-averaged in-flight load (``MLE_SERVING_TARGET_INFLIGHT`` per
  replica), down to zero after ``MLE_SERVING_IDLE_SECONDS`` without requests when
  ``minNodes`` is 0. Idle replicas are pinged; one that stops answering is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlengine.prediction import jsonio
from mlengine.prediction.backends import ReplicaBackend, ReplicaChannel, ReplicaStartError, ReplicaTemplate, Result

log = logging.getLogger("mlengine.serving")
RETRY = [(b"retry-after", b"1")]

__all__ = ["ReplicaStartError", "Result", "Scaling", "VersionPool", "error_result"]


def error_result(status: int, message: str, retry: bool = False) -> Result:
    return status, jsonio.error_body(message), RETRY if retry else []


@dataclass
class Scaling:
    min_nodes: int = 0
    max_nodes: int = 1
    manual: bool = False
    idle_seconds: float = 300.0
    target_inflight: float = 16.0
    queue_limit: int = 256
    timeout: float = 60.0
    start_timeout: float = 180.0

    def floor(self) -> int:
        return self.max_nodes if self.manual else self.min_nodes


class VersionPool:
    """The replicas of one version (see the module contract); the channels' owner."""

    def __init__(self, label: str, scaling: Scaling, backend: ReplicaBackend, template: ReplicaTemplate) -> None:
        self.label = label
        self.scaling = scaling
        self.backend = backend
        self.template = template
        self.loop = asyncio.get_running_loop()
        self.replicas: list[ReplicaChannel] = []
        self.starting: set[asyncio.Task[ReplicaChannel]] = set()
        self.waiters: list[asyncio.Future[ReplicaChannel | Result]] = []
        self.inflight = 0
        self.last_request = time.monotonic()
        self.used = False
        self._area = 0.0
        self._area_since = time.monotonic()
        self._changed = time.monotonic()
        self._last_scale = time.monotonic()
        self.closed = False
        self.last_error = ""
        #: ``observe(body, result)`` after each call a replica answered (request logging); must not block.
        self.observe: Callable[[bytes, Result], None] | None = None

    # Dispatch ------------------------------------------------------------------------------
    async def predict(self, body: bytes) -> Result:
        scaling = self.scaling
        if self.inflight >= scaling.queue_limit * max(1, len(self.replicas)):
            return error_result(429, f"Too many requests in flight for {self.label} "
                                f"({self.inflight}); retry later.", retry=True)
        now = time.monotonic()
        self._area += self.inflight * (now - self._changed)
        self._changed = now
        self.inflight += 1
        self.last_request = now
        self.used = True
        try:
            replicas = self.replicas
            if len(replicas) == 1:
                replica = replicas[0]
            elif replicas:
                replica = min(replicas, key=lambda r: len(r.pending))
            else:
                found = await self._wait_for_replica()
                if isinstance(found, tuple):
                    return found
                replica = found
            result = await replica.send(body, now + scaling.timeout)
            if self.observe is not None:
                self.observe(body, result)
            return result
        finally:
            end = time.monotonic()
            self._area += self.inflight * (end - self._changed)
            self._changed = end
            self.inflight -= 1

    async def _wait_for_replica(self) -> ReplicaChannel | Result:
        if self.closed:
            return error_result(503, f"{self.label} is not serving.", retry=True)
        if not self.starting:
            self.start_replicas(1)
        waiter: asyncio.Future[ReplicaChannel | Result] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, self.scaling.start_timeout)
        except asyncio.TimeoutError:
            return error_result(503, f"No replica of {self.label} became ready within "
                                f"{self.scaling.start_timeout:g} s; retry later.", retry=True)
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    def _wake(self, value: ReplicaChannel | Result) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(value)

    # Replica lifecycle ---------------------------------------------------------------------
    def start_replicas(self, count: int) -> list[asyncio.Task[ReplicaChannel]]:
        tasks = []
        for _ in range(count):
            task = self.loop.create_task(self._start_one())
            self.starting.add(task)
            task.add_done_callback(self._started)
            tasks.append(task)
        self._last_scale = time.monotonic()
        return tasks

    async def _start_one(self) -> ReplicaChannel:
        return await self.backend.start_replica(self.template, self)

    @property
    def request_timeout(self) -> float:
        return self.scaling.timeout

    def _started(self, task: asyncio.Task[ReplicaChannel]) -> None:
        self.starting.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.last_error = str(error)
            log.warning("a replica of %s failed to start: %s", self.label, error)
            if not self.starting and not self.replicas:
                self._wake(error_result(503, f"No replica of {self.label} could start: {error}", retry=True))
            return
        replica = task.result()
        if self.closed or replica.closed:
            replica.stop()
            return
        self.last_error = ""
        self.replicas.append(replica)
        self._wake(replica)

    def replica_lost(self, replica: ReplicaChannel) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
            if not replica.stopping:
                log.warning("a replica of %s stopped (%s); replacing it", self.label, replica.describe_exit())
                replica.stop(0.0)
                self.loop.call_soon(self.tick)

    # Scaling -------------------------------------------------------------------------------
    def desired(self, now: float) -> int:
        s = self.scaling
        if s.manual:
            return s.max_nodes
        window = max(1e-3, now - self._area_since)
        average = (self._area + self.inflight * (now - self._changed)) / window
        want = math.ceil(average / s.target_inflight) if average > 0 else 0
        recently_used = now - self.last_request < s.idle_seconds
        floor = max(s.min_nodes, 1 if recently_used else 0)
        return max(floor, min(want, s.max_nodes))

    def tick(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        for replica in list(self.replicas):
            if replica.expire(now) or not replica.ping(now):
                log.warning("a replica of %s is stuck; replacing it", self.label)
                self.replicas.remove(replica)
                replica.stop(0.5)
        desired = self.desired(now)
        self._area, self._area_since, self._changed = 0.0, now, now
        live = len(self.replicas) + len(self.starting)
        if live < desired and (self.replicas or not self.last_error or self.waiters):
            self.start_replicas(desired - live)
        elif len(self.replicas) > desired and not self.starting:
            cooldown = min(self.scaling.idle_seconds, 30.0)
            if desired == 0 or now - self._last_scale >= cooldown:
                victim = min(self.replicas, key=lambda r: len(r.pending))
                if not victim.pending:
                    self.replicas.remove(victim)
                    victim.stop()
                    self._last_scale = now

    def counts(self) -> dict[str, int]:
        return {"ready": len(self.replicas), "starting": len(self.starting)}

    def close(self) -> None:
        self.closed = True
        for task in list(self.starting):
            task.cancel()
        replicas, self.replicas = self.replicas, []
        for replica in replicas:
            replica.stop()
        self._wake(error_result(503, f"{self.label} is no longer served.", retry=True))

