"""Batch prediction on the Ray executor: a real server on the suite's two-node local Ray cluster
(127.0.0.2 and 127.0.0.3), placement STRICT_SPREAD, a job with two workers: each worker runs
on its own node (the host each worker logs) and the results equal the model's own predictions,
one per input line. Local paths are allowed: the two nodes are this machine (a cluster of
several machines refuses them, tests/batch/test_cli_and_machines.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.batch.models import FEATURES, read_results, rides, sklearn_model, write_inputs
from tests.e2e.helpers import ServerProcess, _kill_leftovers, short_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JOBS = "/v1/projects/mlengine/jobs"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    from tests.raycluster import start_cluster

    cluster = start_cluster([(2, None), (2, None)])
    home = short_home()
    srv = None
    try:
        srv = ServerProcess(home, {**cluster.env, "MLE_RAY_PLACEMENT_STRATEGY": "STRICT_SPREAD",
                                   "MLE_SCHEDULER_INTERVAL_SECONDS": "0.2"}).start(timeout=120)
        yield srv
    finally:
        if srv is not None:
            srv.stop()
            _kill_leftovers(home)
        cluster.stop()


def test_two_workers_on_two_nodes(server: ServerProcess, tmp_path: Path) -> None:
    import joblib
    import pandas as pd

    model_dir = sklearn_model(tmp_path / "model")
    data = [{k: r[k] for k in ("key", *FEATURES)} for r in rides(2400, seed=5)]
    files = write_inputs(tmp_path / "in", data, "JSON", files=2)
    out = tmp_path / "out"
    response = server.api("POST", JOBS, json={"jobId": "on_ray", "predictionInput": {
        "uri": str(model_dir), "dataFormat": "JSON", "inputPaths": [str(files[0].parent / "part-*")],
        "outputPath": str(out), "keyField": "key", "maxWorkerCount": "2", "batchSize": "100"}})
    assert response.status_code == 200, response.text
    job = server.wait_state("on_ray", ("SUCCEEDED", "FAILED"), timeout=240)
    logs = server.logs("on_ray")
    assert job["state"] == "SUCCEEDED", (job, logs[-10:])
    assert job["predictionOutput"]["predictionCount"] == "2400"
    hosts = {}
    for entry in logs:
        match = re.search(r"(worker-\d) on (\S+): \d+ shard", entry["message"])
        if match:
            hosts[match.group(1)] = match.group(2)
    assert set(hosts) == {"worker-0", "worker-1"}, [e["message"] for e in logs]
    assert set(hosts.values()) == {"127.0.0.2", "127.0.0.3"}, hosts  # one worker per node

    results = read_results(out)
    assert sorted(r["key"] for r in results) == list(range(2400))  # one result per line
    model = joblib.load(model_dir / "model.joblib")
    expected = model.predict(pd.DataFrame(data)[FEATURES])
    by_key = {r["key"]: r["prediction"] for r in results}
    assert [by_key[i] for i in range(2400)] == pytest.approx(list(expected), rel=1e-9)
