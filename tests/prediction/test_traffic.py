"""Issue 15.1-15.2: traffic splits, sticky routing keys, shadow versions and canaries with
automatic rollback, through the router's real handler and the serving manager over a temporary
SQLite store (replicas are the fake in-process backend: what is under test is who answers)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.prediction.fakes import FakeBackend
from tests.prediction.test_manager import Parts, model_dir, run

from mlengine.config import load_settings
from mlengine.errors import MLEngineError
from mlengine.prediction.backends import ReplicaChannel, ReplicaOwner, ReplicaTemplate, Result
from mlengine.prediction.canary import CanaryPolicy, validate_canary
from mlengine.prediction.policies import policy_for, validate_split
from mlengine.prediction.router import handle_predict
from mlengine.prediction.shadow import ShadowStats
from mlengine.prediction.traffic import SplitPolicy, bucket_of
from mlengine.store.database import Database, open_database

Rule = Callable[[list[Any]], tuple[int, Any]]


class VersionedBackend(FakeBackend):
    """The fake backend whose replicas of version V answer with ``rules[V]`` when set."""

    def __init__(self) -> None:
        super().__init__()
        self.rules: dict[str, Rule] = {}
        self.calls: Counter[str] = Counter()

    async def start_replica(self, template: ReplicaTemplate, owner: ReplicaOwner) -> ReplicaChannel:
        channel = await super().start_replica(template, owner)
        version = template.key.split("/")[2].split("#")[0]
        original = channel.send

        def send(body: bytes, deadline: float) -> asyncio.Future[Result]:
            self.calls[version] += 1
            rule = self.rules.get(version)
            if rule is None:
                return original(body, deadline)
            status, answer = rule(json.loads(body)["instances"])
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            future.set_result((status, json.dumps(answer).encode(), []))
            return future

        channel.send = send  # type: ignore[method-assign]
        return channel


async def predict(parts: Parts, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None,
                  path: str = "/v1/projects/p/models/m:predict") -> tuple[int, dict[bytes, bytes], Any]:
    """One call through the router's real ASGI handler."""
    sent: list[dict[str, Any]] = []
    raw = json.dumps(body).encode()
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"application/json"),
                                                                         *(headers or [])],
             "app": SimpleNamespace(state=SimpleNamespace(serving=parts.manager))}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await handle_predict(scope, receive, send, lambda *_: None)
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[], Parts]]:
    """``make()``: the manager and model service over a fresh SQLite store (test_manager's)."""
    databases: list[Database] = []

    def build() -> Parts:
        db = open_database(f"sqlite:///{tmp_path / 'store.db'}")
        databases.append(db)
        return Parts(load_settings(home=tmp_path / "home"), db, None)

    yield build
    for db in databases:
        db.dispose()


def versioned(make: Callable[..., Parts], tmp_path: Path, *names: str) -> tuple[Parts, VersionedBackend]:
    parts = make()
    backend = VersionedBackend()
    parts.backend = backend
    parts.manager.backend = backend
    for name in names:
        parts.ready_version("m", name, model_dir(tmp_path))
    return parts, backend


async def patch(parts: Parts, mask: str, **body: Any) -> dict[str, Any]:
    operation: dict[str, Any] = await parts.call("patch_model", "p", "m", body, mask)
    await asyncio.sleep(0.05)  # the manager applies the change on its loop
    return operation


# Policies --------------------------------------------------------------------------------------
def test_split_lands_within_two_percent_and_keys_are_sticky() -> None:
    policy = SplitPolicy({"v1": 90, "v2": 10})
    route = SimpleNamespace(default="v1", versions={"v1": 1, "v2": 2})
    counts = Counter(policy.choose(route) for _ in range(10_000))
    assert 8800 <= counts["v1"] <= 9200 and 800 <= counts["v2"] <= 1200, counts
    sticky = SplitPolicy({"v1": 90, "v2": 10}, routing_key="user")
    for key in ("alice", "bob", "carol", "42", ""):
        assert len({sticky.choose(route, key) for _ in range(50)}) == 1
    keyed = Counter(sticky.choose(route, f"user-{i}") for i in range(10_000))
    assert 8800 <= keyed["v1"] <= 9200, keyed  # keys spread like the split
    assert all(0 <= bucket_of(f"k{i}") < 100 for i in range(100))


def test_split_and_canary_validation_names_the_field() -> None:
    assert validate_split({"v1": "90", "v2": 10}) == {"v1": 90, "v2": 10}
    for bad, field in (({"v1": 90}, "trafficSplit"), ({"v1": 101, "v2": -1}, "trafficSplit.v1"),
                       ([1], "trafficSplit"), ({"v1": 50.5, "v2": 49.5}, "trafficSplit.v1"),
                       ({"bad name!": 100}, "trafficSplit.bad name!")):
        with pytest.raises(MLEngineError) as err:
            validate_split(bad)
        assert field in err.value.message
    assert validate_canary({"stable": "a", "canary": "b", "maxErrorRate": 0.1})["windowSeconds"] == 60.0
    for bad, field in (({"stable": "a", "canary": "a"}, "canary.canary"),
                       ({"stable": "a", "canary": "b", "maxErrorRate": 2}, "canary.maxErrorRate"),
                       ({"stable": "a", "canary": "b", "promotion": {"steps": [50, 25]}}, "canary.promotion.steps"),
                       ({"stable": "a", "canary": "b", "nope": 1}, "canary.nope")):
        with pytest.raises(MLEngineError) as err:
            validate_canary(bad)
        assert field in err.value.message


def test_shadow_stats_agreement_and_feature_differences() -> None:
    stats = ShadowStats()
    served = (200, json.dumps({"predictions": [{"fare": 10.0, "label": "a"}, {"fare": 5.0, "label": "b"}]}).encode())
    shadow = (200, json.dumps({"predictions": [{"fare": 10.0, "label": "a"}, {"fare": 7.5, "label": "b"}]}).encode())
    assert stats.record(served, shadow) is False
    stats.record(served, (500, b'{"error": "boom"}'))
    rendered = stats.render()
    assert rendered["requests"] == 2 and rendered["errors"] == 1
    assert rendered["agreementRate"] == 0.5 and rendered["predictionsCompared"] == 2
    assert rendered["featureDifferences"]["fare"] == {"meanAbsoluteDifference": 1.25, "maxAbsoluteDifference": 2.5,
                                                      "count": 2}
    assert "label" not in rendered["featureDifferences"]


# Through the router and the manager -------------------------------------------------------------
def test_split_via_patch_routes_and_names_the_version(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts, backend = versioned(make, tmp_path, "v1", "v2", "v3")

    async def scenario() -> None:
        status, headers, _ = await predict(parts, {"instances": [1]})
        assert status == 200 and headers[b"x-mle-version"] == b"v1"  # the default version
        operation = await patch(parts, "trafficSplit", trafficSplit={"v1": 90, "v2": 10})
        assert operation["response"]["trafficSplit"] == {"v1": 90, "v2": 10}
        seen: Counter[bytes] = Counter()
        for _ in range(2000):
            status, headers, _ = await predict(parts, {"instances": [1]})
            assert status == 200
            seen[headers[b"x-mle-version"]] += 1
        assert 1700 <= seen[b"v1"] <= 1900 and seen[b"v1"] + seen[b"v2"] == 2000, seen
        # Sticky: a header or an instance field names the key.
        await patch(parts, "routingKey", routingKey="user")
        by_header = {(await predict(parts, {"instances": [1]}, [(b"user", b"alice")]))[1][b"x-mle-version"]
                     for _ in range(30)}
        by_field = {(await predict(parts, {"instances": [{"user": "alice", "x": i}]}))[1][b"x-mle-version"]
                    for i in range(30)}
        assert len(by_header) == 1 and by_header == by_field
        # A version that names itself in the URL is not split; the header names it too.
        status, headers, _ = await predict(parts, {"instances": [1]},
                                           path="/v1/projects/p/models/m/versions/v3:predict")
        assert status == 200 and headers[b"x-mle-version"] == b"v3"
        # Bad patches name the field; versions in the split cannot be deleted.
        for body, mask, field in (({"trafficSplit": {"v1": 50, "zz": 50}}, "trafficSplit", "trafficSplit.zz"),
                                  ({"trafficSplit": {"v1": 50, "v2": 40}}, "trafficSplit", "trafficSplit"),
                                  ({"shadowVersions": ["v2"]}, "shadowVersions", "shadowVersions"),
                                  ({"canary": {"stable": "v1", "canary": "v3"}}, "canary", "trafficSplit")):
            with pytest.raises(MLEngineError) as err:
                await parts.call("patch_model", "p", "m", body, mask)
            assert field in err.value.message and err.value.code.http_status == 400
        with pytest.raises(MLEngineError) as err:
            await parts.call("delete_version", "p", "m", "v2")
        assert "trafficSplit" in err.value.message
        await patch(parts, "trafficSplit,routingKey", trafficSplit=None)
        assert (await predict(parts, {"instances": [1]}))[1][b"x-mle-version"] == b"v1"
        assert "trafficSplit" not in await parts.call("get_model", "p", "m")

    run(parts, scenario)


def test_shadow_gets_a_copy_that_is_compared_and_never_returned(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts, backend = versioned(make, tmp_path, "v1", "v3")
    backend.rules["v1"] = lambda instances: (200, {"predictions": [{"fare": float(i)} for i in instances]})
    backend.rules["v3"] = lambda instances: (200, {"predictions": [{"fare": float(i) + (1 if i % 4 == 0 else 0)}
                                                                   for i in instances]})

    async def scenario() -> None:
        await patch(parts, "shadowVersions", shadowVersions=["v3"])
        for i in range(40):
            status, headers, answer = await predict(parts, {"instances": [i]})
            assert status == 200 and headers[b"x-mle-version"] == b"v1"
            assert answer == {"predictions": [{"fare": float(i)}]}  # never the shadow's
        await asyncio.sleep(0.05)
        assert backend.calls["v3"] == 40
        status = parts.manager.traffic_status("p", "m")
        assert status is not None
        shadow = status["shadows"]["v3"]
        assert shadow["requests"] == 40 and shadow["disagreementRate"] == 0.25  # 10 of 40 fares differ
        assert shadow["featureDifferences"]["fare"]["maxAbsoluteDifference"] == 1.0
        await patch(parts, "description", description="reconciled")  # counters survive a reconcile
        assert parts.manager.traffic_status("p", "m")["shadows"]["v3"]["requests"] == 40  # type: ignore[index]

    run(parts, scenario)


def test_failing_canary_is_rolled_back_within_its_window(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts, backend = versioned(make, tmp_path, "v1", "v2")
    failing = {"on": False}
    backend.rules["v2"] = lambda instances: ((500, {"error": "canary broke"}) if failing["on"]
                                             else (200, {"predictions": instances}))

    async def scenario() -> None:
        await patch(parts, "trafficSplit,canary", trafficSplit={"v1": 50, "v2": 50},
                    canary={"stable": "v1", "canary": "v2", "maxErrorRate": 0.2, "windowSeconds": 30,
                            "minRequests": 10})
        policy = parts.manager.routes[("p", "m")].policy
        assert isinstance(policy, CanaryPolicy) and policy.share == 50
        for _ in range(40):
            assert (await predict(parts, {"instances": [1]}))[0] == 200
        assert policy.share == 50  # healthy: the guards hold
        failing["on"] = True
        answered: Counter[bytes] = Counter()
        for _ in range(200):
            _, headers, _ = await predict(parts, {"instances": [1]})
            answered[headers[b"x-mle-version"]] += 1
            await asyncio.sleep(0.002)
        assert answered[b"v2"] < 60, answered  # rolled back after a few failures, not after 200
        await asyncio.sleep(0.2)
        model = await parts.call("get_model", "p", "m")
        assert model["trafficSplit"] == {"v1": 100, "v2": 0}
        record = model["canary"]["rollback"]
        assert "error rate" in record["reason"] and "maxErrorRate 0.2" in record["reason"] and record["time"]
        assert record["share"] == 50
        after = [(await predict(parts, {"instances": [1]}))[1][b"x-mle-version"] for _ in range(50)]
        assert set(after) == {b"v1"}

    run(parts, scenario)


def test_canary_promotion_steps_up_while_guards_hold(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts, _ = versioned(make, tmp_path, "v1", "v2")

    async def scenario() -> None:
        await patch(parts, "trafficSplit,canary", trafficSplit={"v1": 90, "v2": 10},
                    canary={"stable": "v1", "canary": "v2", "maxErrorRate": 0.2, "minRequests": 3,
                            "promotion": {"steps": [50, 100], "intervalSeconds": 1}})
        shares = []
        for _ in range(12):
            for _ in range(60):
                await predict(parts, {"instances": [1]})
            policy = parts.manager.routes[("p", "m")].policy
            assert isinstance(policy, CanaryPolicy)
            shares.append(policy.share)
            await asyncio.sleep(0.3)
            if policy.share == 100:
                break
        assert shares[0] == 10 and 50 in shares and shares[-1] == 100, shares
        model = await parts.call("get_model", "p", "m")
        assert model["trafficSplit"] == {"v1": 0, "v2": 100} and model["canary"]["promotedTime"]

    run(parts, scenario)


def test_policy_for_stored_fields() -> None:
    row = SimpleNamespace(spec={}, default_version="a")
    assert policy_for(row).name == "default"
    row.spec = {"shadowVersions": ["b"]}
    shadow_only = policy_for(row)
    assert isinstance(shadow_only, SplitPolicy) and shadow_only.split == {"a": 100} and shadow_only.shadows == ("b",)
    row.spec = {"trafficSplit": {"a": 80, "b": 20}, "canary": {"stable": "a", "canary": "b", "maxDisagreement": 0.1}}
    canary = policy_for(row)
    assert isinstance(canary, CanaryPolicy) and canary.mirror("b") == ("a",) and canary.mirror("a") == ()


def test_canary_that_disagrees_with_the_stable_is_rolled_back(make: Callable[..., Parts], tmp_path: Path) -> None:
    parts, backend = versioned(make, tmp_path, "v1", "v2")
    backend.rules["v2"] = lambda instances: (200, {"predictions": [x + 1 for x in instances]})  # wrong answers

    async def scenario() -> None:
        await patch(parts, "trafficSplit,canary", trafficSplit={"v1": 50, "v2": 50},
                    canary={"stable": "v1", "canary": "v2", "maxDisagreement": 0.1, "minRequests": 10})
        for _ in range(120):
            _, headers, answer = await predict(parts, {"instances": [1]})
            if headers[b"x-mle-version"] == b"v2":
                assert answer == {"predictions": [2]}  # the canary answers; the stable's copy is compared only
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)
        model = await parts.call("get_model", "p", "m")
        assert "disagreed with the stable version v1" in model["canary"]["rollback"]["reason"]
        assert backend.calls["v1"] > 60  # served calls plus the copies of the canary's

    run(parts, scenario)


def test_latency_guard_compares_p99_with_the_stable() -> None:
    policy = CanaryPolicy({"v1": 50, "v2": 50}, {"stable": "v1", "canary": "v2", "maxLatencyRatio": 2.0,
                                                 "minRequests": 5, "windowSeconds": 60})
    for _ in range(10):
        policy.observe("v1", 200, 0.010, b"", b"")
        policy.observe("v2", 200, 0.015, b"", b"")
    assert policy.share == 50  # 1.5 times: within the guard
    for _ in range(10):
        policy.observe("v2", 200, 0.100, b"", b"")
    policy.check(time.monotonic())
    assert policy.share == 0 and policy.rollback_reason is not None and "maxLatencyRatio 2" in policy.rollback_reason
