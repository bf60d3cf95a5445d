"""The ``local`` replica backend: replica processes on this machine, reached over unix sockets.

Replicas are forked from per-framework zygotes (or started as fresh interpreters, see
:mod:`mlengine.prediction.launcher`) and speak the frame protocol of
:mod:`mlengine.prediction.protocol` over a unix socket. A replica exits when its router
connection closes, so nothing outlives the control plane for long: :meth:`LocalBackend.reconcile`
only removes the socket files and private directories a previous server left behind. Replicas
are confined (:mod:`mlengine.prediction.sandboxing`) and answer the control plane's process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from mlengine.config import Settings
from mlengine.prediction import jsonio, protocol
from mlengine.prediction.backends._base import (
    ReplicaBackend,
    ReplicaChannel,
    ReplicaOwner,
    ReplicaStartError,
    ReplicaTemplate,
    Result,
)
from mlengine.prediction.launcher import Launcher, ReplicaProcess

RETRY = [(b"retry-after", b"1")]
#: Seconds after a replica's end before its private directory is removed (it is killed by then).
PRIVATE_DIR_GRACE = 5.0
PING_EVERY = 5.0
PONG_TIMEOUT = 30.0


def _error(status: int, message: str, retry: bool = False) -> Result:
    return status, jsonio.error_body(message), RETRY if retry else []


class LocalReplica(asyncio.Protocol, ReplicaChannel):
    """One replica process and the router's connection to it."""

    def __init__(self, owner: ReplicaOwner, process: ReplicaProcess) -> None:
        self.owner = owner
        self.process = process
        self.loop = asyncio.get_running_loop()
        self.reader = protocol.FrameReader()
        self.transport: Any = None
        self.pending: dict[int, tuple[asyncio.Future[Result], float]] = {}
        self.next_id = 1
        self.greeting: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.closed = False
        self.stopping = False
        self.info: dict[str, Any] = {}
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0
        self.on_close: Callable[[LocalReplica], None] | None = None

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
            message = (f"The replica serving {self.owner.label} stopped while handling the request "
                       f"({self.process.exit_description()}); the request was not completed. Retry it.")
            if self.stopping:
                message = f"The replica serving {self.owner.label} was stopped; retry the request."
            result = _error(503, message, retry=True)
            for future, _ in self.pending.values():
                if not future.done():
                    future.set_result(result)
            self.pending.clear()
        self.owner.replica_lost(self)
        if self.on_close is not None:
            self.on_close(self)

    # ReplicaChannel ----------------------------------------------------------------------
    def send(self, body: bytes, deadline: float) -> asyncio.Future[Result]:
        request_id = self.next_id
        self.next_id = request_id + 1 if request_id < 0xFFFFFFF0 else 1
        future: asyncio.Future[Result] = self.loop.create_future()
        self.pending[request_id] = (future, deadline)
        self.transport.write(protocol.frame(protocol.PREDICT, request_id, body))
        return future

    def expire(self, now: float) -> bool:
        expired = [rid for rid, (_, deadline) in self.pending.items() if deadline <= now]
        for rid in expired:
            future, _ = self.pending.pop(rid)
            if not future.done():
                future.set_result(_error(
                    504, f"The prediction did not finish within {self.owner.request_timeout:g} s "
                    f"(MLE_PREDICT_TIMEOUT); the replica serving {self.owner.label} is being replaced."))
        return bool(expired)

    def ping(self, now: float) -> bool:
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

    def describe_exit(self) -> str:
        return self.process.exit_description()


class LocalBackend(ReplicaBackend):
    """Replicas as local processes (zygote forks or fresh interpreters) over unix sockets."""

    name: ClassVar[str] = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._launcher: Launcher | None = None
        self._counter = itertools.count(1)
        self._live: set[LocalReplica] = set()

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = Launcher(self.settings)
        return self._launcher

    async def start_replica(self, template: ReplicaTemplate, owner: ReplicaOwner) -> ReplicaChannel:
        log_path = template.root / "logs" / f"replica-{int(time.time())}-{next(self._counter)}.log"
        process = await self.launcher.launch(template.runtime_kind, template.config, log_path,
                                             template.root / "replica.json")
        try:
            replica = await self._connect(template, owner, process)
        except BaseException:
            process.signal(signal.SIGKILL)
            self._forget(process)
            raise
        if replica.closed:
            self._forget(process)
        else:
            self._live.add(replica)
            replica.on_close = self._closed
        return replica

    def _closed(self, replica: LocalReplica) -> None:
        self._live.discard(replica)
        self._forget(replica.process)

    def _forget(self, process: ReplicaProcess) -> None:
        """Remove the private directory (HOME, TMPDIR) of a replica that ended or is being
        killed, once it is surely gone (what a crash leaves behind, ``reconcile`` removes)."""
        path = process.private_dir
        if path is None:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(PRIVATE_DIR_GRACE, lambda: loop.run_in_executor(None, shutil.rmtree, path, True))

    async def _connect(self, template: ReplicaTemplate, owner: ReplicaOwner,
                       process: ReplicaProcess) -> LocalReplica:
        loop = asyncio.get_running_loop()
        replica = LocalReplica(owner, process)
        timeout = template.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                await loop.create_unix_connection(lambda: replica, process.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not process.alive():
                    raise ReplicaStartError(_died(process)) from None
                if time.monotonic() > deadline:
                    raise ReplicaStartError(f"the replica did not open its socket within {timeout:g} s") from None
                await asyncio.sleep(0.005)
        try:
            kind, payload = await asyncio.wait_for(replica.greeting, max(1.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            replica.stop(0.1)
            raise ReplicaStartError(f"the model did not load within {timeout:g} s "
                                    "(MLE_SERVING_START_TIMEOUT)") from None
        if kind != protocol.READY:
            replica.stop(1.0)
            raise ReplicaStartError(payload.decode(errors="replace") or _died(process))
        replica.info = dict(jsonio.loads(payload))
        return replica

    async def reconcile(self, templates: Iterable[ReplicaTemplate]) -> None:
        """Local replicas die with their control plane: remove the sockets and private
        directories it left behind."""
        prefix = f"r{os.getpid()}-"
        sock_dir = self.launcher.sock_dir
        with contextlib.suppress(OSError):
            for entry in os.scandir(sock_dir):
                if entry.name.startswith("r") and entry.name.endswith(".sock") and not entry.name.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        leftovers = []
        with contextlib.suppress(OSError):
            leftovers = [entry.path for entry in os.scandir(self.launcher.private_dir)
                         if entry.name.startswith("r") and not entry.name.startswith(prefix)]
        for path in leftovers:
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def close(self) -> None:
        for replica in list(self._live):
            replica.stop(1.0)
        self._live.clear()
        if self._launcher is not None:
            self._launcher.close()


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
