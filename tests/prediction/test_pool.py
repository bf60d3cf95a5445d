"""The version pool against a fake replica backend: cold starts, dispatch to the least busy
replica, overload, crashes, start failures and the scaling policy (no real replicas)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.prediction.fakes import FakeBackend

from mlengine.prediction.backends import ReplicaTemplate
from mlengine.prediction.pool import Scaling, VersionPool
from mlengine.prediction.replica import ReplicaConfig

BODY = json.dumps({"instances": [[1, 2, 3]]}).encode()


def template() -> ReplicaTemplate:
    return ReplicaTemplate(key="p/m/v#1", label="version v of model m",
                           config=ReplicaConfig(model_dir="/nowhere", framework="SCIKIT_LEARN"), root=Path("/nowhere"))


def make_pool(backend: FakeBackend, **scaling: float) -> VersionPool:
    return VersionPool("version v of model m", Scaling(**scaling), backend, template())  # type: ignore[arg-type]


def test_cold_start_dispatch_and_scale_to_zero() -> None:
    async def main() -> None:
        backend = FakeBackend()
        pool = make_pool(backend, min_nodes=0, max_nodes=3, idle_seconds=0.05)
        assert pool.counts() == {"ready": 0, "starting": 0}
        status, body, _ = await pool.predict(BODY)  # no replica: starts one and waits for it
        assert status == 200 and json.loads(body)["predictions"] == [[1, 2, 3]]
        assert len(backend.started) == 1 and pool.counts() == {"ready": 1, "starting": 0}
        await asyncio.sleep(0.1)
        pool.tick()  # the load window still holds the request
        pool.tick()  # idle past idle_seconds with minNodes 0: down to zero
        assert pool.counts()["ready"] == 0 and backend.stopped == backend.started
        assert (await pool.predict(BODY))[0] == 200 and len(backend.started) == 2

    asyncio.run(main())


def test_least_busy_replica_overload_and_crash() -> None:
    async def main() -> None:
        backend = FakeBackend()
        pool = make_pool(backend, manual=True, min_nodes=2, max_nodes=2, queue_limit=2, idle_seconds=60)
        pool.tick()
        await asyncio.sleep(0.01)
        assert pool.counts() == {"ready": 2, "starting": 0}
        first, second = backend.live()
        first.hold = second.hold = True
        waiting = [asyncio.ensure_future(pool.predict(BODY)) for _ in range(4)]
        await asyncio.sleep(0.01)
        assert (first.sent, second.sent) == (2, 2)  # spread over both
        status, body, headers = await pool.predict(BODY)
        assert status == 429 and (b"retry-after", b"1") in headers
        assert "Too many requests in flight for version v of model m" in json.loads(body)["error"]
        first.crash()
        second.release()
        results = await asyncio.gather(*waiting)
        assert sorted(r[0] for r in results) == [200, 200, 503, 503]
        assert pool.counts()["ready"] == 1
        await asyncio.sleep(0.01)  # the pool replaces the crashed replica
        pool.tick()
        await asyncio.sleep(0.01)
        assert pool.counts()["ready"] == 2 and len(backend.started) == 3
        pool.close()
        assert not backend.live()
        assert (await pool.predict(BODY))[0] == 503

    asyncio.run(main())


def test_start_failure_answers_503_with_the_reason_and_does_not_retry_in_a_loop() -> None:
    async def main() -> None:
        backend = FakeBackend()
        backend.fail = "Could not load model.joblib: bad pickle"
        pool = make_pool(backend, min_nodes=1, max_nodes=1, idle_seconds=60)
        status, body, _ = await pool.predict(BODY)
        assert status == 503
        assert json.loads(body)["error"] == ("No replica of version v of model m could start: Could not load "
                                             "model.joblib: bad pickle")
        attempts = backend.attempts
        for _ in range(3):
            pool.tick()
            await asyncio.sleep(0)
        assert backend.attempts == attempts  # no restart storm while nobody waits
        backend.fail = None
        assert (await pool.predict(BODY))[0] == 200  # a request tries again

    asyncio.run(main())


def test_autoscaling_follows_load() -> None:
    async def main() -> None:
        backend = FakeBackend()
        pool = make_pool(backend, min_nodes=1, max_nodes=3, target_inflight=1.0, idle_seconds=60)
        pool.tick()
        await asyncio.sleep(0.01)
        (only,) = backend.live()
        only.hold = True
        waiting = [asyncio.ensure_future(pool.predict(BODY)) for _ in range(5)]
        await asyncio.sleep(0.05)
        pool.tick()  # 5 in flight for a target of 1 per replica: up to maxNodes
        await asyncio.sleep(0.01)
        assert pool.counts()["ready"] == 3
        only.release()
        await asyncio.gather(*waiting)

    asyncio.run(main())
