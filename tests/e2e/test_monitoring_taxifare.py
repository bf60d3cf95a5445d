"""The taxifare sample trained as a job and deployed from its export gets a training baseline
with no extra flag: mlengine finds the job, its --train-data-paths, and the header-less CSV's
column names in the trainer's own code. Held-out rides raise no skew; rides whose numbers were
shifted and whose passenger counts were never seen in training raise skew on exactly those
features, and drift against the previous window; a window with few rows raises nothing."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, kill_serving, predict

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "taxifare"
COLUMNS = ["fare_amount", "pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude",
           "dropoff_latitude", "passenger_count", "key"]
FEATURES = COLUMNS[1:7]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_MONITORING_LOG_FLUSH_SECONDS": "1"}).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def deployed(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlengine.core.packaging import build_sdist

    work = tmp_path_factory.mktemp("taxifare")
    package = build_sdist(SAMPLE / "trainer", work / "dist")
    job_dir = work / "job"
    body = {"jobId": "taxifare_monitored", "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local", "jobDir": str(job_dir),
        "args": ["--train-steps", "5", "--batch-size", "32", "--eval-steps", "2",
                 "--train-data-paths", str(SAMPLE / "data" / "taxi-train.csv"),
                 "--eval-data-paths", str(SAMPLE / "data" / "taxi-valid.csv")]}}
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=body).status_code == 200
    job = server.wait_state("taxifare_monitored", ("SUCCEEDED", "FAILED"), timeout=280)
    assert job["state"] == "SUCCEEDED", server.logs("taxifare_monitored")[-20:]
    export = sorted((job_dir / "export").iterdir())[-1]
    server.mle("models", "create", "taxifare", check=True)
    server.mle("versions", "create", "v1", "--model", "taxifare", "--origin", str(export), "--log-sampling", "1",
               check=True, timeout=280)
    return f"{MODELS}/taxifare/versions/v1"


def rides(shift: bool = False, count: int = 400) -> list[dict[str, Any]]:
    """Held-out rides (taxi-valid.csv: not the training file) as instances."""
    with (SAMPLE / "data" / "taxi-valid.csv").open() as f:
        rows = [dict(zip(COLUMNS, line, strict=True)) for line in csv.reader(f)][:count]
    out = []
    for i, row in enumerate(rows):
        ride: dict[str, Any] = {"pickup_datetime": row["pickup_datetime"]}
        ride.update({k: float(row[k]) for k in FEATURES[1:]})
        if shift:
            ride["dropoff_latitude"] += 0.2  # the numbers of one feature shifted
            ride["passenger_count"] = float(7 + i % 3)  # counts never seen in training
        out.append(ride)
    return out


def send(server: ServerProcess, instances: list[dict[str, Any]]) -> None:
    for i in range(0, len(instances), 20):
        assert predict(server, "taxifare", {"instances": instances[i:i + 20]}).status_code == 200


def run(server: ServerProcess, path: str) -> dict[str, Any]:
    response = server.api("POST", path + ":runMonitoring", json={})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_job_export_gets_its_baseline_and_skew_drift_and_small_windows_are_judged(
        server: ServerProcess, deployed: str) -> None:
    send(server, rides())
    first = run(server, deployed)
    assert first["rows"] == 400 and first["skew"]["alerts"] == [], first["skew"]

    described = server.api("GET", deployed + "/monitoring").json()
    base = described["baseline"]
    assert base["state"] == "READY" and base["origin"] == "training job taxifare_monitored", base
    assert base["source"]["uris"] == [str(SAMPLE / "data" / "taxi-train.csv")]
    assert base["read"]["columnsFrom"] == "trainer package" and base["read"]["header"] is False
    assert sorted(base["features"]) == sorted(FEATURES) and base["featuresFrom"] == "model"
    assert base["statistics"]["rows"] == 7333

    send(server, rides(shift=True))
    second = run(server, deployed)
    assert sorted(second["skew"]["alerts"]) == ["dropoff_latitude", "passenger_count"], second["skew"]
    assert sorted(second["drift"]["alerts"]) == ["dropoff_latitude", "passenger_count"], second["drift"]
    assert second["drift"]["previousRun"] == first["name"].rsplit("/", 1)[-1]

    send(server, rides(shift=True, count=20))
    small = run(server, deployed)
    assert small["rows"] == 20 and small["alerts"] == []
    assert "too few to judge" in small["skew"]["note"]

    run_id = second["name"].rsplit("/", 1)[-1]
    full = server.api("GET", f"{deployed}/monitoringRuns/{run_id}").json()
    assert "profile" in full, (run_id, str(full)[:600])
    assert full["profile"]["features"]["passenger_count"]["histogram"]["counts"][-1] == 400  # all over the top
    assert json.loads(json.dumps(server.api("GET", deployed + "/monitoring:histograms").json()))["histograms"]
