"""A fake replica backend for the pool and manager unit tests: replicas are in-process objects
that answer at once (or when the test says), crash on demand and record what happened."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, ClassVar

from mlengine.prediction.backends import (
    ReplicaBackend,
    ReplicaChannel,
    ReplicaOwner,
    ReplicaStartError,
    ReplicaTemplate,
    Result,
)

RETRY = [(b"retry-after", b"1")]


class FakeChannel(ReplicaChannel):
    """Answers ``{"predictions": instances, "replica": n}``; with ``hold`` set, only on :meth:`release`."""

    def __init__(self, backend: FakeBackend, owner: ReplicaOwner, template: ReplicaTemplate, number: int) -> None:
        self.backend = backend
        self.owner = owner
        self.template = template
        self.number = number
        self.pending: dict[int, tuple[asyncio.Future[Result], Result]] = {}
        self.closed = False
        self.stopping = False
        self.info = {"framework": template.config.framework, "pid": number}
        self.hold = False
        self.sent = 0
        self._ids = itertools.count(1)

    def send(self, body: bytes, deadline: float) -> asyncio.Future[Result]:
        self.sent += 1
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        instances = json.loads(body)["instances"]
        answer: Result = (200, json.dumps({"predictions": instances, "replica": self.number}).encode(), [])
        if self.hold:
            self.pending[next(self._ids)] = (future, answer)
        else:
            future.set_result(answer)
        return future

    def release(self) -> None:
        for future, answer in self.pending.values():
            if not future.done():
                future.set_result(answer)
        self.pending.clear()

    def expire(self, now: float) -> bool:
        return False

    def ping(self, now: float) -> bool:
        return not self.closed

    def _close(self, message: str) -> None:
        if self.closed:
            return
        self.closed = True
        for future, _ in self.pending.values():
            if not future.done():
                future.set_result((503, json.dumps({"error": message}).encode(), RETRY))
        self.pending.clear()
        self.owner.replica_lost(self)

    def stop(self, kill_after: float = 3.0) -> None:
        self.stopping = True
        self.backend.stopped.append(self)
        self._close("stopped")

    def crash(self) -> None:
        self._close("crashed")

    def describe_exit(self) -> str:
        return "killed by SIGKILL" if self.closed else "running"


class FakeBackend(ReplicaBackend):
    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.started: list[FakeChannel] = []
        self.stopped: list[FakeChannel] = []
        self.fail: str | None = None  # the next starts raise ReplicaStartError(fail)
        self.gate: asyncio.Event | None = None  # starts wait for it
        self.attempts = 0
        self.cancelled = 0
        self.closed = False
        self.reconciled: list[ReplicaTemplate] = []
        self._numbers = itertools.count(1)

    async def start_replica(self, template: ReplicaTemplate, owner: ReplicaOwner) -> ReplicaChannel:
        self.attempts += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise ReplicaStartError(self.fail)
        channel = FakeChannel(self, owner, template, next(self._numbers))
        self.started.append(channel)
        return channel

    async def reconcile(self, templates: Any) -> None:
        self.reconciled = list(templates)

    async def close(self) -> None:
        self.closed = True

    def live(self) -> list[FakeChannel]:
        return [c for c in self.started if not c.closed]
