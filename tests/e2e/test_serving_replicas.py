"""Replicas on a real server: scale to zero and back, fixed node counts, a replica killed under
load, overload and not-ready answers. No request may hang."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, build_package, short_home
from tests.e2e.serving_helpers import (
    MODELS,
    alive,
    deploy,
    kill_serving,
    predict,
    serving_processes,
    wait_operation,
    write_sklearn_model,
)

pytestmark = pytest.mark.e2e
ROW = {"instances": [[1.0, 2.0, 3.0]]}


@pytest.fixture
def make_server() -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        server = ServerProcess(short_home(), env).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
        kill_serving(server.home)


def replicas(server: ServerProcess, model: str, version: str) -> dict[str, int]:
    return dict(server.api("GET", f"{MODELS}/{model}/versions/{version}").json().get("replicas") or {})


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.1)


def test_scale_to_zero_and_back_and_fixed_counts(make_server: Any, tmp_path: Path) -> None:
    server = make_server(MLE_SERVING_IDLE_SECONDS="1.5")
    model_dir = write_sklearn_model(tmp_path / "model")
    deploy(server, "elastic", "v1", model_dir)
    assert predict(server, "elastic", ROW).status_code == 200
    assert replicas(server, "elastic", "v1") == {"ready": 1, "starting": 0}
    _zygotes, before = serving_processes(server)
    assert len(before) == 1

    wait_for(lambda: replicas(server, "elastic", "v1")["ready"] == 0, 15, "scale to zero")
    wait_for(lambda: not any(alive(pid) for pid in before), 10, "the replica process exiting")
    started = time.monotonic()
    response = predict(server, "elastic", ROW)
    cold = time.monotonic() - started
    assert response.status_code == 200 and cold < 5.0, cold
    assert replicas(server, "elastic", "v1")["ready"] == 1

    # minNodes 1 keeps a replica however idle; manualScaling fixes the count.
    wait_operation(server, server.api("PATCH", f"{MODELS}/elastic/versions/v1",
                                      params={"updateMask": "autoScaling.minNodes"},
                                      json={"autoScaling": {"minNodes": 1}}).json())
    time.sleep(3)
    assert replicas(server, "elastic", "v1")["ready"] == 1
    wait_operation(server, server.api("PATCH", f"{MODELS}/elastic/versions/v1",
                                      params={"updateMask": "manualScaling"},
                                      json={"manualScaling": {"nodes": 2}}).json())
    wait_for(lambda: replicas(server, "elastic", "v1")["ready"] == 2, 20, "scale to 2 nodes")
    assert len(serving_processes(server)[1]) == 2
    assert all(predict(server, "elastic", ROW).status_code == 200 for _ in range(10))

    wait_operation(server, server.api("DELETE", f"{MODELS}/elastic/versions/v1").json())
    wait_for(lambda: not serving_processes(server)[1], 10, "replicas stopping with their version")


def test_replica_killed_under_load_is_replaced_and_nothing_hangs(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    deploy(server, "sturdy", "v1", write_sklearn_model(tmp_path / "model"), autoScaling={"minNodes": 1})
    statuses: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                          timeout=20) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{MODELS}/sturdy:predict", json=ROW)
                except httpx.HTTPError as err:  # a hang would end here as a timeout
                    failures.append(repr(err))
                    return
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert "stopped while handling the request" in response.json()["error"]
                    assert response.headers["retry-after"] == "1"

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    _zygotes, victims = serving_processes(server)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    killed_at = len(statuses)
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    assert set(statuses) <= {200, 503}, set(statuses)
    assert statuses[killed_at:].count(200) > 10  # served again by the replacement
    _zygotes, now = serving_processes(server)
    assert len(now) == 1 and now[0] != victims[0]
    assert predict(server, "sturdy", ROW).status_code == 200


SLOW = '''
import time


class Slow:
    @classmethod
    def from_path(cls, model_dir):
        time.sleep(3)
        return cls()

    def predict(self, instances, **kwargs):
        time.sleep(0.4)
        return [len(str(i)) for i in instances]
'''


def test_not_ready_is_503_and_overload_is_429_at_once(make_server: Any, tmp_path: Path) -> None:
    server = make_server(MLE_PREDICT_QUEUE_LIMIT="2")
    root = tmp_path / "src"
    (root / "slowpred").mkdir(parents=True)
    (root / "slowpred" / "__init__.py").write_text(textwrap.dedent(SLOW))
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='slowpred', version='0.1', "
                                   "packages=['slowpred'])\n")
    package = build_package(root, "slowpred")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "note.txt").write_text("nothing to load")
    assert server.api("POST", MODELS, json={"name": "slow"}).status_code == 200
    operation = server.api("POST", f"{MODELS}/slow/versions", json={
        "name": "v1", "deploymentUri": str(model_dir), "predictionClass": "slowpred.Slow",
        "packageUris": [str(package)], "autoScaling": {"minNodes": 1, "maxNodes": 1}}).json()
    early = predict(server, "slow", {"instances": ["a"]})
    assert early.status_code == 503 and early.headers["retry-after"] == "1"
    assert early.json() == {"error": "Version v1 of model slow is not ready yet (state CREATING); retry in a few "
                                     "seconds."}
    assert "error" not in wait_operation(server, operation)

    results: list[tuple[int, float, str]] = []

    def one() -> None:
        started = time.monotonic()
        response = predict(server, "slow", {"instances": ["abc"]})
        results.append((response.status_code, time.monotonic() - started, response.text))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(code for code, _, _ in results)
    assert codes.count(200) >= 2 and codes.count(429) >= 3, results
    for code, elapsed, text in results:
        if code == 429:
            assert elapsed < 1.0 and "Too many requests in flight for version v1 of model slow" in text
        else:
            assert code == 200 and '"predictions":[3]' in text


def test_killed_server_leaves_nothing_and_restarts_serving(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    deploy(server, "durable", "v1", write_sklearn_model(tmp_path / "model"), autoScaling={"minNodes": 1})
    first = predict(server, "durable", ROW).json()
    zygotes, replicas_before = serving_processes(server)
    assert zygotes and replicas_before
    server.kill9()
    wait_for(lambda: not any(alive(pid) for pid in zygotes + replicas_before), 15,
             "zygote and replicas exiting with their server")
    server.start()
    assert server.api("GET", f"{MODELS}/durable/versions/v1").json()["state"] == "READY"
    assert predict(server, "durable", ROW).json() == first
    wait_for(lambda: replicas(server, "durable", "v1")["ready"] == 1, 10, "minNodes replica after restart")
