"""Preprocessing jobs end to end on one real server: the taxifare Beam pipeline runs on the
DirectRunner (CLI) and on Beam's DaskRunner over the job's own Dask workers (API) with the same
outputs; the model trained on its output, deployed, predicts from raw instances exactly as the
transform applied by hand followed by the model; the version and the job record the transform's
fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import REPO, ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, kill_serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = REPO / "samples" / "taxifare"
JOBS = "/v1/projects/mlengine/jobs"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prep")


@pytest.fixture(scope="module")
def package(work: Path) -> Path:
    from mlengine.core.packaging import build_sdist

    return build_sdist(SAMPLE / "trainer", work / "dist")


def console_page(server: ServerProcess, path: str) -> str:
    """A console page, signed in with the admin token as a browser would."""
    import re

    import httpx

    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as browser:
        form = browser.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None, form[:500]
        browser.post("/console/signin", data={"csrf": csrf.group(1), "token": server.token})
        page = browser.get(path)
        assert page.status_code == 200, page.text[:500]
        return page.text


def digest(out: Path) -> tuple[dict[str, int], str]:
    """Row counts per split and a checksum of the sorted rows of every output file."""
    counts, rows = {}, []
    for split in ("train", "eval"):
        lines = [line for f in sorted(out.glob(f"{split}-*-of-*.csv")) for line in f.read_text().splitlines()]
        counts[split] = len(lines)
        rows += [f"{split}:{line}" for line in lines]
    return counts, hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


@pytest.fixture(scope="module")
def direct(server: ServerProcess, work: Path) -> Path:
    out = work / "direct"
    result = server.mle("jobs", "submit", "preprocessing", "prep_direct", "--package-path", str(SAMPLE / "trainer"),
                        "--module-name", "trainer.preprocess", "--job-dir", str(out), "--worker-count", "2",
                        "--stream-logs", "--", "--input", str(SAMPLE / "data" / "taxi-train.csv"), "--nbuckets", "6",
                        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_direct_and_dask_runners_give_the_same_outputs(server: ServerProcess, direct: Path, work: Path,
                                                       package: Path) -> None:
    out = work / "dask"
    body = {"jobId": "prep_dask", "preprocessingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.preprocess", "jobDir": str(out),
        "runner": "DaskRunner", "workerCount": "2",
        "args": ["--input", str(SAMPLE / "data" / "taxi-train.csv"), "--nbuckets", "6"]}}
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text
    job = server.wait_state("prep_dask", ("SUCCEEDED", "FAILED"), timeout=600)
    assert job["state"] == "SUCCEEDED", [e["message"] for e in server.logs("prep_dask")][-40:]

    counts, checksum = digest(direct)
    assert counts["train"] > 4000 and counts["eval"] > 1000
    assert digest(out) == (counts, checksum)

    fingerprint = json.loads((direct / "transform" / "transform.json").read_text())["fingerprint"]
    for job_id in ("prep_direct", "prep_dask"):
        output = server.job(job_id)["preprocessingOutput"]
        assert output["transformFingerprint"] == fingerprint, output
    assert server.job("prep_dask")["preprocessingOutput"]["runner"] == "DaskRunner"
    tasks = {str(entry.get("taskName")) for entry in server.logs("prep_dask")}
    assert {"driver-replica-0", "worker-replica-0", "worker-replica-1"} <= {t.rsplit("/", 1)[-1] for t in tasks}
    listed = server.api("GET", JOBS).json()["jobs"]
    assert {"prep_direct", "prep_dask"} <= {j["jobId"] for j in listed}


NOTEBOOK = """
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

out = sys.argv[1]


def square(x):
    return x * x


def write(total):
    with open(out + "/total.txt", "w") as handle:
        handle.write(str(total))


options = PipelineOptions(["--runner=mlengine.client.beam.MLEngineRunner", "--mle_job_id=prep_notebook",
                           "--mle_job_dir=" + out, "--mle_worker_count=1"])
with beam.Pipeline(options=options) as p:
    p | beam.Create(list(range(100))) | beam.Map(square) | beam.CombineGlobally(sum) | beam.Map(write)
print("notebook done")
"""


def test_a_pipeline_built_in_a_notebook_runs_with_the_mlengine_runner(server: ServerProcess, direct: Path,
                                                                      work: Path) -> None:
    import os
    import subprocess
    import sys

    # the notebook's Beam: the one the jobs run with (the environment the first job built)
    site = next(p.parent for p in (server.home / "envs").glob("*/site/apache_beam"))
    out = work / "notebook"
    env = {**os.environ, "PYTHONPATH": str(site), "MLE_API_URL": server.url, "MLE_TOKEN": server.token}
    proc = subprocess.run([sys.executable, "-c", NOTEBOOK, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Submitted preprocessing job mlengine/prep_notebook" in proc.stdout
    assert (out / "total.txt").read_text() == str(sum(x * x for x in range(100)))
    job = server.job("prep_notebook")
    assert job["state"] == "SUCCEEDED" and job["preprocessingInput"]["pipelineUri"].endswith("pipeline.pb")


def test_bad_input_is_refused_naming_the_field(server: ServerProcess, package: Path) -> None:
    body = {"jobId": "prep_bad", "preprocessingInput": {"packageUris": [str(package)],
                                                        "pythonModule": "trainer.preprocess", "runner": "Spark"}}
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 400
    assert "preprocessingInput.runner" in response.json()["error"]["message"]


def test_cancel_a_pipeline_waiting_for_its_cluster(server: ServerProcess, package: Path, work: Path) -> None:
    # nothing listens at the discard port: the driver waits for the cluster until cancelled
    body = {"jobId": "prep_cancel", "preprocessingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.preprocess", "jobDir": str(work / "cancelled"),
        "runner": "DaskRunner", "daskAddress": "tcp://127.0.0.1:9"}}
    assert server.api("POST", JOBS, json=body).status_code == 200
    server.wait_state("prep_cancel", ("RUNNING",), timeout=300)
    assert server.api("POST", f"{JOBS}/prep_cancel:cancel").status_code == 200
    job = server.wait_state("prep_cancel", ("CANCELLED", "FAILED", "SUCCEEDED"), timeout=120)
    assert job["state"] == "CANCELLED", job
    assert not (work / "cancelled" / "transform").exists()


def test_model_trained_on_the_output_predicts_from_raw_instances(server: ServerProcess, direct: Path,
                                                                 package: Path, work: Path) -> None:
    job_dir = work / "train"
    body = {"jobId": "taxifare_on_prep", "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local", "jobDir": str(job_dir),
        "args": ["--train-steps", "10", "--batch-size", "32", "--eval-steps", "2", "--nbuckets", "6",
                 "--train-data-paths", str(direct / "train-*.csv"), "--eval-data-paths", str(direct / "eval-*.csv"),
                 "--transform-dir", str(direct / "transform")]}}
    assert server.api("POST", JOBS, json=body).status_code == 200
    job = server.wait_state("taxifare_on_prep", ("SUCCEEDED", "FAILED"), timeout=400)
    assert job["state"] == "SUCCEEDED", server.logs("taxifare_on_prep")[-20:]
    export = sorted((job_dir / "export").iterdir())[-1]
    analysis = json.loads((direct / "transform" / "transform.json").read_text())

    server.mle("models", "create", "taxiprep", check=True)
    server.mle("versions", "create", "v1", "--model", "taxiprep", "--origin", str(export), check=True, timeout=300)
    version = server.api("GET", f"{MODELS}/taxiprep/versions/v1").json()
    assert version["transformFingerprint"] == analysis["fingerprint"]
    assert f'<code id="transform">{analysis["fingerprint"]}</code>' in console_page(
        server, "/console/projects/mlengine/models/taxiprep/versions/v1")

    import sys

    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(SAMPLE))
    from trainer import analyze

    raw = [json.loads(line) for line in (SAMPLE / "instances.json").read_text().splitlines() if line.strip()]
    rides = [analyze.parse_line(line) for line in (SAMPLE / "data" / "taxi-valid.csv").read_text().splitlines()[:20]]
    raw += [{k: r[k] for k in ("pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude",
                               "dropoff_latitude", "passenger_count")} for r in rides if r]
    response = server.api("POST", f"{MODELS}/taxiprep/versions/v1:predict", json={"instances": raw})
    assert response.status_code == 200, response.text
    online = np.array([p["fare_amount"] if isinstance(p, dict) else p for p in response.json()["predictions"]],
                      dtype=np.float32).reshape(-1)
    features = analyze.transform_by_hand(raw, analysis)
    model = tf.saved_model.load(str(export))
    by_hand = model.signatures["predict_transformed"](**{k: tf.constant(v) for k, v in features.items()})
    np.testing.assert_allclose(online, by_hand["fare_amount"].numpy(), rtol=1e-5, atol=1e-4)
