"""Batch prediction with the taxifare SavedModel (exported by a tiny training job of the sample,
deployed as version taxifare/v1): 50 rides each in JSON and Parquet through googleapiclient, in
CSV and TF_RECORD through the CLI; every result equals the version's online prediction of the
same ride (a CSV row, like an online list instance, holds the inputs in the signature's order)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.batch.models import read_results, write_inputs
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, kill_serving, predict
from tests.e2e.test_googleapiclient import ml_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "taxifare"
#: The serving signature's inputs.
RAW = ["pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude",
       "passenger_count"]
#: A CSV row is an instance list: the signature's inputs sorted by name (saved_model_cli's order).
POSITIONAL = sorted(RAW)
ROWS = 50


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_SCHEDULER_INTERVAL_SECONDS": "0.2"}).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def version(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """taxifare/v1: the SavedModel a (tiny) taxifare training job exported, as
    tests/e2e/test_serving_taxifare.py trains it."""
    from mlengine.core.packaging import build_sdist

    work = tmp_path_factory.mktemp("taxifare")
    package = build_sdist(SAMPLE / "trainer", work / "dist")
    job_dir = work / "job"
    body = {"jobId": "taxifare_export", "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local", "jobDir": str(job_dir),
        "args": ["--train-steps", "5", "--batch-size", "32", "--eval-steps", "2",
                 "--train-data-paths", str(SAMPLE / "data" / "taxi-train.csv"),
                 "--eval-data-paths", str(SAMPLE / "data" / "taxi-valid.csv")]}}
    response = server.api("POST", "/v1/projects/mlengine/jobs", json=body)
    assert response.status_code == 200, response.text
    job = server.wait_state("taxifare_export", ("SUCCEEDED", "FAILED"), timeout=280)
    assert job["state"] == "SUCCEEDED", server.logs("taxifare_export")[-20:]
    exported = sorted((job_dir / "export").iterdir())[-1]
    server.mle("models", "create", "taxifare", check=True)
    server.mle("versions", "create", "v1", "--model", "taxifare", "--origin", str(exported), check=True, timeout=280)
    return "projects/mlengine/models/taxifare/versions/v1"


def rides() -> list[dict[str, Any]]:
    """The first rides of the sample's validation data: the raw features and a key."""
    with open(SAMPLE / "data" / "taxi-valid.csv") as f:
        rows = list(itertools.islice(csv.reader(f), ROWS))
    return [{"key": i, "pickup_datetime": row[1], **{name: float(v) for name, v in zip(RAW[1:], row[2:7], strict=True)}}
            for i, row in enumerate(rows)]


def test_taxifare_scores_four_formats_as_online_prediction(server: ServerProcess, version: str,
                                                          tmp_path: Path) -> None:
    data = rides()
    online = predict(server, "taxifare", {"instances": [{k: r[k] for k in RAW} for r in data]})
    assert online.status_code == 200, online.text
    expected = [p["fare_amount"] for p in online.json()["predictions"]]
    as_lists = predict(server, "taxifare", {"instances": [[r[k] for k in POSITIONAL] for r in data]})
    assert [p["fare_amount"] for p in as_lists.json()["predictions"]] == expected  # the same instances
    files = {fmt: write_inputs(tmp_path / f"in_{fmt}", data, fmt, columns=POSITIONAL)[0]
             for fmt in ("JSON", "CSV", "PARQUET", "TF_RECORD")}

    jobs = ml_client(server).projects().jobs()  # after TensorFlow's import: a fresh connection
    for fmt in ("JSON", "PARQUET"):
        jobs.create(parent="projects/mlengine", body={"jobId": f"taxi_{fmt.lower()}", "predictionInput": {
            "versionName": version, "dataFormat": fmt, "inputPaths": [str(files[fmt])], "keyField": "key",
            "outputPath": str(tmp_path / f"out_{fmt}"), "maxWorkerCount": "1", "region": "local"}}).execute()
    for fmt, spelled in (("CSV", "csv"), ("TF_RECORD", "tf-record")):
        extra = ["--key-field", "key"] if fmt != "CSV" else []
        result = server.mle("jobs", "submit", "prediction", f"taxi_{fmt.lower()}", "--model", "taxifare",
                            "--version", "v1", "--data-format", spelled, "--input-paths", str(files[fmt]),
                            "--output-path", str(tmp_path / f"out_{fmt}"), "--max-worker-count", "1",
                            "--stream-logs", *extra, timeout=280)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"predictionCount: '{ROWS}'" in result.stdout
    for fmt in ("JSON", "PARQUET", "CSV", "TF_RECORD"):
        job = server.wait_state(f"taxi_{fmt.lower()}", ("SUCCEEDED", "FAILED"), timeout=240)
        assert job["state"] == "SUCCEEDED", (fmt, job, server.logs(f"taxi_{fmt.lower()}")[-10:])
        assert job["predictionOutput"]["predictionCount"] == str(ROWS) and job["predictionOutput"]["errorCount"] == "0"
        results = read_results(tmp_path / f"out_{fmt}")
        assert len(results) == ROWS, fmt
        if fmt != "CSV":
            assert [r["key"] for r in results] == list(range(ROWS)), fmt
        got = [r["fare_amount"] for r in results]
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-5), fmt
    assert server.api("GET", f"{MODELS}/taxifare/versions/v1").json()["state"] == "READY"
