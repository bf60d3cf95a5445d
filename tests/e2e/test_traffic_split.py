"""Issue 15.1-15.2 on a real server: three scikit-learn versions of one model, traffic set with
``mle models update`` (split, shadow, routing key, canary) and the REST patch; calls on the
model's name land by the split, the same key on the same version, the shadow's answers are
compared (trafficStatus) and never returned, and a bad split is refused naming the field.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, deploy, kill_serving, write_sklearn_model

pytestmark = [pytest.mark.e2e]
ROW = [0.2, 0.4, 0.6]


def write_other_model(path: Path) -> Path:
    """Another pipeline on the same 3 features, with other coefficients (answers differ)."""
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x = rng.random((200, 3))
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(Ridge().fit(x, x @ [3.0, 2.0, 1.0]), path / "model.joblib")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("traffic")
    process = ServerProcess(short_home()).start()
    try:
        same, other = write_sklearn_model(root / "same"), write_other_model(root / "other")
        for version, uri in (("v1", same), ("v2", same), ("v3", other)):
            operation = deploy(process, "fares", version, uri, autoScaling={"minNodes": 1, "maxNodes": 1})
            assert "error" not in operation, operation
        yield process
    finally:
        process.stop()
        kill_serving(process.home)


def call(client: object, **kwargs: object) -> tuple[int, str, list[float]]:
    response = client.post(f"{MODELS}/fares:predict", json={"instances": [ROW]}, **kwargs)  # type: ignore[attr-defined]
    return response.status_code, response.headers.get("x-mle-version", ""), response.json().get("predictions")


def test_split_shadow_and_sticky_keys_through_the_cli(server: ServerProcess) -> None:
    result = server.mle("models", "update", "fares", "--traffic-split", "v1=90,v2=10", "--shadow", "v3", check=True)
    assert "Updated model [fares]" in result.stderr + result.stdout
    described = server.api("GET", f"{MODELS}/fares").json()
    assert described["trafficSplit"] == {"v1": 90, "v2": 10} and described["shadowVersions"] == ["v3"]
    seen: Counter[str] = Counter()
    served = set()
    with server.client as client:
        for _ in range(1000):
            status, version, predictions = call(client)
            assert status == 200
            seen[version] += 1
            served.add(round(predictions[0], 9))
    assert 860 <= seen["v1"] <= 940 and seen["v1"] + seen["v2"] == 1000, seen
    assert len(served) == 1  # v1 and v2 share the model; v3's different answer never came back
    status = server.api("GET", f"{MODELS}/fares/trafficStatus").json()
    shadow = status["shadows"]["v3"]
    assert shadow["requests"] >= 990 and shadow["disagreementRate"] == 1.0, shadow  # v3's coefficients differ
    assert shadow["featureDifferences"]["value"]["meanAbsoluteDifference"] > 0

    server.mle("models", "update", "fares", "--routing-key", "x-user", check=True)
    with server.client as client:
        for user in ("alice", "bob", "carol", "dave"):
            versions = {call(client, headers={"x-user": user})[1] for _ in range(20)}
            assert len(versions) == 1, (user, versions)

    bad = server.api("PATCH", f"{MODELS}/fares", params={"updateMask": "trafficSplit"},
                     json={"trafficSplit": {"v1": 60, "v9": 40}})
    assert bad.status_code == 400 and "trafficSplit.v9" in bad.json()["error"]["message"]
    refused = server.mle("models", "update", "fares", "--traffic-split", "v1=half")
    assert refused.returncode != 0 and "--traffic-split" in refused.stderr
    in_use = server.api("DELETE", f"{MODELS}/fares/versions/v3")
    assert in_use.status_code == 400 and "shadowVersions" in in_use.json()["error"]["message"]

    server.mle("models", "update", "fares", "--clear-traffic", check=True)
    with server.client as client:
        assert {call(client)[1] for _ in range(10)} == {"v1"}


def test_canary_guard_set_by_the_cli_is_stored_and_rendered(server: ServerProcess) -> None:
    server.mle("models", "update", "fares", "--traffic-split", "v1=80,v2=20", "--canary",
               "stable=v1,canary=v2,maxErrorRate=0.1,windowSeconds=30,promotionSteps=50:100,"
               "promotionIntervalSeconds=600", check=True)
    model = server.api("GET", f"{MODELS}/fares").json()
    assert model["canary"]["stable"] == "v1" and model["canary"]["promotion"] == {
        "steps": [50, 100], "intervalSeconds": 600.0}
    with server.client as client:
        answered = Counter(call(client)[1] for _ in range(100))
    assert set(answered) == {"v1", "v2"}
    status = json.loads(server.mle("models", "traffic-status", "fares", "--format", "json", check=True).stdout)
    assert status["policy"] == "canary" and status["canary"]["share"] == 20
    assert status["canary"]["windows"]["v2"]["errorRate"] == 0.0  # healthy: no rollback
    assert "rollback" not in server.api("GET", f"{MODELS}/fares").json()["canary"]
    server.mle("models", "update", "fares", "--clear-traffic", check=True)
