"""The replicas of one version, as the router sees them: dispatch, cold starts, crashes, scaling.

Contract
--------
- Everything runs on the control plane's event loop; nothing here blocks.
- :meth:`VersionPool.predict` forwards a raw request body to the least busy ready replica over
  its unix socket and returns ``(status, body, headers)``. It never hangs: a replica that
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
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mlengine.prediction import jsonio, protocol
from mlengine.prediction.launcher import ReplicaProcess

log = logging.getLogger("mlengine.serving")
Result = tuple[int, bytes, list[tuple[bytes, bytes]]]
RETRY = [(b"retry-after", b"1")]
PING_EVERY = 5.0
PONG_TIMEOUT = 30.0


def error_result(status: int, message: str, retry: bool = False) -> Result:
    return status, jsonio.error_body(message), RETRY if retry else []


class ReplicaStartError(Exception):
    """A replica did not become ready; the message is the loader's (or why it died)."""


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


class Replica(asyncio.Protocol):
    def __init__(self, pool: VersionPool, process: ReplicaProcess) -> None:
        self.pool = pool
        self.process = process
        self.loop = asyncio.get_running_loop()
        self.reader = protocol.FrameReader()
        self.transport: Any = None
        self.pending: dict[int, tuple[asyncio.Future[Result], float]] = {}
        self.next_id = 1
        self.greeting: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.ready = False
        self.closed = False
        self.stopping = False
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0

    # asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        for kind, request_id, payload in self.reader.feed(data):
            if kind == protocol.REPLY:
                entry = self.pending.pop(request_id, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result((protocol.STATUS.unpack_from(payload)[0], payload[2:], []))
            elif kind in (protocol.READY, protocol.FAILED) and not self.greeting.done():
                self.greeting.set_result((kind, payload))
            elif kind == protocol.PONG:
                self.ping_sent = 0.0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.greeting.done():
            self.greeting.set_result((protocol.FAILED, b""))
        if self.pending:
            message = (f"The replica serving {self.pool.label} stopped while handling the request "
                       f"({self.process.exit_description()}); the request was not completed. Retry it.")
            if self.stopping:
                message = f"The replica serving {self.pool.label} was stopped; retry the request."
            result = error_result(503, message, retry=True)
            for future, _ in self.pending.values():
                if not future.done():
                    future.set_result(result)
            self.pending.clear()
        self.pool.replica_lost(self)

    # Requests ----------------------------------------------------------------------------
    def send(self, body: bytes, deadline: float) -> asyncio.Future[Result]:
        request_id = self.next_id
        self.next_id = request_id + 1 if request_id < 0xFFFFFFF0 else 1
        future: asyncio.Future[Result] = self.loop.create_future()
        self.pending[request_id] = (future, deadline)
        self.transport.write(protocol.frame(protocol.PREDICT, request_id, body))
        return future

    def expire(self, now: float) -> bool:
        """Fail requests past their deadline with 504; True if any did (the replica is stuck)."""
        expired = [rid for rid, (_, deadline) in self.pending.items() if deadline <= now]
        for rid in expired:
            future, _ = self.pending.pop(rid)
            if not future.done():
                future.set_result(error_result(
                    504, f"The prediction did not finish within {self.pool.scaling.timeout:g} s "
                    f"(MLE_PREDICT_TIMEOUT); the replica serving {self.pool.label} is being replaced."))
        return bool(expired)

    def ping(self, now: float) -> bool:
        """Ping an idle replica; False when an earlier ping went unanswered for too long."""
        if self.pending or self.closed:
            return True
        if self.ping_sent and now - self.ping_sent > PONG_TIMEOUT:
            return False
        if not self.ping_sent and now - self.last_seen > PING_EVERY:
            self.ping_sent = now
            self.transport.write(protocol.frame(protocol.PING, 0))
        return True

    def stop(self, kill_after: float = 3.0) -> None:
        self.stopping = True
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.process.signal(signal.SIGTERM)
        self.loop.call_later(kill_after, self.process.signal, signal.SIGKILL)


class VersionPool:
    def __init__(self, label: str, scaling: Scaling,
                 launch: Callable[[], Awaitable[ReplicaProcess]]) -> None:
        self.label = label
        self.scaling = scaling
        self.launch = launch
        self.loop = asyncio.get_running_loop()
        self.replicas: list[Replica] = []
        self.starting: set[asyncio.Task[Replica]] = set()
        self.waiters: list[asyncio.Future[Replica | Result]] = []
        self.inflight = 0
        self.last_request = time.monotonic()
        self.used = False
        self._area = 0.0
        self._area_since = time.monotonic()
        self._changed = time.monotonic()
        self._last_scale = time.monotonic()
        self.closed = False
        self.last_error = ""

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
            return await replica.send(body, now + scaling.timeout)
        finally:
            end = time.monotonic()
            self._area += self.inflight * (end - self._changed)
            self._changed = end
            self.inflight -= 1

    async def _wait_for_replica(self) -> Replica | Result:
        if self.closed:
            return error_result(503, f"{self.label} is not serving.", retry=True)
        if not self.starting:
            self.start_replicas(1)
        waiter: asyncio.Future[Replica | Result] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, self.scaling.start_timeout)
        except asyncio.TimeoutError:
            return error_result(503, f"No replica of {self.label} became ready within "
                                f"{self.scaling.start_timeout:g} s; retry later.", retry=True)
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)

    def _wake(self, value: Replica | Result) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(value)

    # Replica lifecycle ---------------------------------------------------------------------
    def start_replicas(self, count: int) -> list[asyncio.Task[Replica]]:
        tasks = []
        for _ in range(count):
            task = self.loop.create_task(self._start_one())
            self.starting.add(task)
            task.add_done_callback(self._started)
            tasks.append(task)
        self._last_scale = time.monotonic()
        return tasks

    async def _start_one(self) -> Replica:
        process = await self.launch()
        replica = Replica(self, process)
        deadline = time.monotonic() + self.scaling.start_timeout
        while True:
            try:
                await self.loop.create_unix_connection(lambda: replica, process.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not process.alive():
                    raise ReplicaStartError(_died(process)) from None
                if time.monotonic() > deadline:
                    process.signal(signal.SIGKILL)
                    raise ReplicaStartError(f"the replica did not open its socket within "
                                            f"{self.scaling.start_timeout:g} s") from None
                await asyncio.sleep(0.005)
        try:
            kind, payload = await asyncio.wait_for(replica.greeting, max(1.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            replica.stop(0.1)
            raise ReplicaStartError(f"the model did not load within {self.scaling.start_timeout:g} s "
                                    "(MLE_SERVING_START_TIMEOUT)") from None
        if kind != protocol.READY:
            replica.stop(1.0)
            raise ReplicaStartError(payload.decode(errors="replace") or _died(process))
        replica.info = jsonio.loads(payload)  # type: ignore[attr-defined]
        return replica

    def _started(self, task: asyncio.Task[Replica]) -> None:
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
        replica.ready = True
        self.last_error = ""
        self.replicas.append(replica)
        self._wake(replica)

    def replica_lost(self, replica: Replica) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
            if not replica.stopping:
                log.warning("a replica of %s stopped (%s); replacing it", self.label,
                            replica.process.exit_description())
                replica.process.signal(signal.SIGKILL)
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
        for replica in self.replicas:
            replica.stop()
        self.replicas.clear()
        self._wake(error_result(503, f"{self.label} is no longer served.", retry=True))


def _died(process: ReplicaProcess) -> str:
    tail = ""
    with contextlib.suppress(OSError):
        with open(process.log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1] if lines else ""
    return f"the replica process exited before loading the model ({process.exit_description()})" + (
        f": {tail}" if tail else "")
