"""Conformance suite of :class:`~mlengine.prediction.backends.ReplicaBackend` implementations.

Every backend runs the same tests: subclass :class:`ReplicaBackendSuite` in a test module
(its name must start with ``Test`` for pytest to collect it) and override :meth:`make_backend`
(and :meth:`kill_replica` if the backend's replicas are not local processes)::

    from mlengine.testing.replica_backends import ReplicaBackendSuite

    class TestLocalBackend(ReplicaBackendSuite):
        def make_backend(self, home):
            return LocalBackend(load_settings(home=home))

The model is a custom prediction routine that needs no ML framework: it echoes its instances,
sleeps on ``"sleep"`` and fails to load when its directory holds a file named ``broken``.
Each test runs its scenario in a fresh event loop and closes the backend afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mlengine.prediction.backends._base import (
    ReplicaBackend,
    ReplicaChannel,
    ReplicaStartError,
    ReplicaTemplate,
)
from mlengine.prediction.replica import ReplicaConfig

ROUTINE = '''
import os, time


class Echo:
    @classmethod
    def from_path(cls, model_dir):
        if os.path.exists(os.path.join(model_dir, "broken")):
            raise RuntimeError("this model is broken on purpose")
        return cls()

    def predict(self, instances, **kwargs):
        for instance in instances:
            if instance == "sleep":
                time.sleep(float(kwargs.get("seconds", 2)))
        return [{"echo": instance, "pid": os.getpid()} for instance in instances]
'''


class Owner:
    """A stand-in for the version pool: records the channels reported lost."""

    def __init__(self, label: str = "version v1 of model conformance", timeout: float = 30.0) -> None:
        self.label = label
        self.timeout = timeout
        self.lost: list[ReplicaChannel] = []

    @property
    def request_timeout(self) -> float:
        return self.timeout

    def replica_lost(self, replica: ReplicaChannel) -> None:
        self.lost.append(replica)


def body(*instances: Any, **kwargs: Any) -> bytes:
    return json.dumps({"instances": list(instances), **kwargs}).encode()


class ReplicaBackendSuite:
    """The tests every replica backend passes (see the module docstring)."""

    start_timeout = 60.0

    # Hooks ----------------------------------------------------------------------------------
    def make_backend(self, home: Path) -> ReplicaBackend:
        raise NotImplementedError("override make_backend(home) to return the backend under test")

    def kill_replica(self, channel: ReplicaChannel) -> None:
        """Make the replica behind ``channel`` die abruptly (default: SIGKILL its pid)."""
        os.kill(int(channel.info["pid"]), signal.SIGKILL)

    def leftovers(self, backend: ReplicaBackend) -> list[str]:
        """What of ``backend`` still runs (processes, actors), described; checked empty after
        every test's ``close()``. Default: nothing is checked."""
        return []

    # Helpers --------------------------------------------------------------------------------
    def template(self, root: Path, broken: bool = False) -> ReplicaTemplate:
        code = root / "code"
        code.mkdir(parents=True, exist_ok=True)
        (code / "conformance_echo.py").write_text(textwrap.dedent(ROUTINE))
        model = root / ("broken-model" if broken else "model")
        model.mkdir(exist_ok=True)
        (model / "note.txt").write_text("an echo model")
        if broken:
            (model / "broken").write_text("")
        config = ReplicaConfig(model_dir=str(model), framework="CUSTOM", prediction_class="conformance_echo.Echo",
                               pythonpath=[str(code)], accept_timeout=self.start_timeout)
        return ReplicaTemplate(key=f"conformance/echo/{model.name}#1", label="version v1 of model conformance",
                               config=config, root=root / "version", runtime_kind="base",
                               start_timeout=self.start_timeout)

    def run(self, tmp_path: Path, scenario: Callable[[ReplicaBackend, Path], Awaitable[None]]) -> None:
        async def main() -> None:
            backend = self.make_backend(tmp_path / "home")
            try:
                await asyncio.wait_for(scenario(backend, tmp_path), 120)
            finally:
                await backend.close()
            deadline = time.monotonic() + 15
            while self.leftovers(backend) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert not self.leftovers(backend), f"still running after close(): {self.leftovers(backend)}"

        asyncio.run(main())

    @staticmethod
    async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)

    # Tests ----------------------------------------------------------------------------------
    def test_start_predict_and_stop(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner()
            await backend.reconcile([])
            channel = await backend.start_replica(self.template(root), owner)
            assert not channel.closed and not channel.stopping and len(channel.pending) == 0
            assert channel.info.get("framework") == "CUSTOM"
            status, payload, _ = await channel.send(body("a", "b"), time.monotonic() + 30)
            assert status == 200, payload
            assert [p["echo"] for p in json.loads(payload)["predictions"]] == ["a", "b"]
            futures = [channel.send(body(i), time.monotonic() + 30) for i in range(20)]
            assert len(channel.pending) > 0
            answers = await asyncio.gather(*futures)
            assert [json.loads(p)["predictions"][0]["echo"] for _, p, _ in answers] == list(range(20))
            assert len(channel.pending) == 0
            bad = await channel.send(b"{nope", time.monotonic() + 30)
            assert bad[0] == 400 and "not valid JSON" in json.loads(bad[1])["error"]
            assert channel.ping(time.monotonic()) is True
            assert channel.describe_exit() == "running"
            channel.stop(kill_after=2.0)
            await self.until(lambda: channel.closed)
            assert owner.lost == [channel] and channel.stopping

        self.run(tmp_path, scenario)

    def test_model_that_fails_to_load_is_a_start_error(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner()
            try:
                await backend.start_replica(self.template(root, broken=True), owner)
            except ReplicaStartError as err:
                assert "this model is broken on purpose" in str(err)
            else:
                raise AssertionError("a model that cannot load must raise ReplicaStartError")

        self.run(tmp_path, scenario)

    def test_crash_fails_pending_requests_and_reports_the_loss(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner()
            channel = await backend.start_replica(self.template(root), owner)
            slow = channel.send(body("sleep", seconds=30), time.monotonic() + 60)
            await asyncio.sleep(0.3)
            self.kill_replica(channel)
            status, payload, headers = await asyncio.wait_for(slow, 15)
            assert status == 503 and (b"retry-after", b"1") in headers, payload
            await self.until(lambda: owner.lost == [channel])
            assert channel.closed and not channel.stopping
            await self.until(lambda: channel.describe_exit() != "running")  # the process may still be exiting

        self.run(tmp_path, scenario)

    def test_request_past_its_deadline_expires_with_504(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner(timeout=0.2)
            channel = await backend.start_replica(self.template(root), owner)
            slow = channel.send(body("sleep", seconds=3), time.monotonic() + 0.2)
            assert channel.expire(time.monotonic()) is False
            await asyncio.sleep(0.3)
            assert channel.expire(time.monotonic()) is True
            status, payload, _ = await slow
            assert status == 504 and "did not finish within 0.2 s" in json.loads(payload)["error"]
            channel.stop(0.5)
            await self.until(lambda: channel.closed)

        self.run(tmp_path, scenario)

    def test_replicas_are_separate_and_close_stops_them_all(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner()
            template = self.template(root)
            channels = await asyncio.gather(*(backend.start_replica(template, owner) for _ in range(2)))
            pids = set()
            for channel in channels:
                _, payload, _ = await channel.send(body("x"), time.monotonic() + 30)
                pids.add(json.loads(payload)["predictions"][0]["pid"])
            assert len(pids) == 2
            await backend.close()
            await self.until(lambda: all(c.closed for c in channels))
            assert set(owner.lost) == set(channels)

        self.run(tmp_path, scenario)

    def test_cancelled_start_leaves_nothing_running(self, tmp_path: Path) -> None:
        async def scenario(backend: ReplicaBackend, root: Path) -> None:
            owner = Owner()
            task = asyncio.ensure_future(backend.start_replica(self.template(root), owner))
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:  # it was ready before the cancel landed: stopping it is the caller's job
                task.result().stop(0.5)

        self.run(tmp_path, scenario)
