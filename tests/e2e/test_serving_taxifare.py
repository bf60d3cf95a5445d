"""The taxifare sample end to end: a training job exports a SavedModel, which is deployed with
the CLI and predicted through the CLI, the Google API client and plain HTTP; ``mle local
predict`` gives the same numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, kill_serving, predict
from tests.e2e.test_googleapiclient import ml_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "taxifare"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def exported(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SavedModel a (tiny) taxifare training job exported."""
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
    exports = sorted((job_dir / "export").iterdir())
    assert (exports[-1] / "saved_model.pb").is_file()
    return exports[-1]


def test_taxifare_savedmodel_from_a_job(server: ServerProcess, exported: Path) -> None:
    server.mle("models", "create", "taxifare", check=True)
    server.mle("versions", "create", "v1", "--model", "taxifare", "--origin", str(exported), check=True,
               timeout=280)
    version = server.api("GET", f"{MODELS}/taxifare/versions/v1").json()
    assert version["state"] == "READY" and version["framework"] == "TENSORFLOW"

    instances_file = SAMPLE / "instances.json"
    rides = [json.loads(line) for line in instances_file.read_text().splitlines() if line.strip()]
    via_cli = json.loads(server.mle("predict", "--model", "taxifare", "--json-instances", str(instances_file),
                                    "--format", "json", check=True).stdout)["predictions"]
    assert len(via_cli) == 2 and all(set(p) == {"fare_amount"} for p in via_cli)
    assert all(0 < p["fare_amount"] < 200 for p in via_cli)
    table = server.mle("predict", "--model", "taxifare", "--json-instances", str(instances_file),
                       check=True).stdout.splitlines()
    assert table[0].split() == ["FARE_AMOUNT"] and len(table) == 3
    via_google = ml_client(server).projects().predict(
        name="projects/mlengine/models/taxifare/versions/v1", body={"instances": rides}).execute()["predictions"]
    via_http = predict(server, "taxifare", {"instances": rides}).json()["predictions"]
    local = json.loads(server.mle("local", "predict", "--model-dir", str(exported), "--json-instances",
                                  str(instances_file), "--format", "json", check=True).stdout)["predictions"]
    assert via_cli == via_google == via_http == local

    bad = predict(server, "taxifare", {"instances": [{**rides[0], "pickup_longitude": "west"}]})
    assert bad.status_code == 400
    assert bad.json()["error"] == "Instance 0, input 'pickup_longitude': expected a float32 number, got str 'west'."
    missing = predict(server, "taxifare", {"instances": [{"pickup_datetime": "2011-01-28 20:42:59 UTC"}]})
    assert missing.status_code == 400 and "is missing input" in missing.json()["error"]
    signature = predict(server, "taxifare", {"instances": rides, "signature_name": "nope"})
    assert signature.status_code == 400
    assert signature.json()["error"].startswith("The model has no signature 'nope'; its signatures are: ")
