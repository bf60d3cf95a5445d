"""Batch prediction on a real server (local executor): a scikit-learn pipeline scores JSON, CSV,
Parquet and TFRecord files through googleapiclient and the CLI, with the same numbers as
online prediction; bad input is refused at create (400 naming the field) or fails the job
with the reason; a worker killed mid-job is retried and the job resumes from the shards not
yet done (no line doubled or lost); a job is cancelled mid-way."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.batch.models import FEATURES, read_results, rides, sklearn_model, write_inputs
from tests.e2e.helpers import ServerProcess, build_package, short_home, write_trainer
from tests.e2e.serving_helpers import kill_serving
from tests.e2e.test_googleapiclient import ml_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JOBS = "/v1/projects/mlengine/jobs"
MODELS = "/v1/projects/mlengine/models"

SLOW_ROUTINE = """
import time


class SlowPredictor:
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        time.sleep(0.002 * len(instances))
        return [instance["v"] * 2 for instance in instances]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_SCHEDULER_INTERVAL_SECONDS": "0.2"}).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch")


def wait_version(server: ServerProcess, model: str, version: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = server.api("GET", f"{MODELS}/{model}/versions/{version}").json()["state"]
        if state != "CREATING":
            assert state == "READY", state
            return
        time.sleep(0.3)
    raise AssertionError(f"version {model}/{version} still CREATING")


@pytest.fixture(scope="module")
def sk_model(server: ServerProcess, work: Path) -> Path:
    """A scikit-learn pipeline on disk, also deployed as version taxi_sk/v1."""
    model_dir = sklearn_model(work / "sk_model")
    assert server.api("POST", MODELS, json={"name": "taxi_sk"}).status_code == 200
    response = server.api("POST", f"{MODELS}/taxi_sk/versions", json={"name": "v1", "deploymentUri": str(model_dir)})
    assert response.status_code == 200, response.text
    wait_version(server, "taxi_sk", "v1")
    return model_dir


def create(server: ServerProcess, job_id: str, **prediction_input: Any) -> Any:
    return server.api("POST", JOBS, json={"jobId": job_id, "predictionInput": prediction_input})


def online(server: ServerProcess, instances: list[dict[str, Any]]) -> list[float]:
    response = server.api("POST", f"{MODELS}/taxi_sk/versions/v1:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def test_formats_through_googleapiclient_equal_online_predictions(server: ServerProcess, sk_model: Path,
                                                                  work: Path) -> None:
    data = [{k: r[k] for k in ("key", *FEATURES)} for r in rides(1500)]
    expected = online(server, [{k: r[k] for k in FEATURES} for r in data])
    inputs = {fmt: write_inputs(work / f"in_{fmt}", data, fmt, columns=FEATURES, files=2)
              for fmt in ("JSON", "CSV", "PARQUET", "TF_RECORD")}
    jobs = ml_client(server).projects().jobs()  # after TensorFlow's import: a fresh connection
    for fmt, files in inputs.items():
        body: dict[str, Any] = {"uri": str(sk_model), "dataFormat": fmt, "outputPath": str(work / f"out_{fmt}"),
                                "inputPaths": [str(files[0].parent / "part-*")], "region": "local",
                                "maxWorkerCount": "1"}
        if fmt != "CSV":
            body["keyField"] = "key"
        created = jobs.create(parent="projects/mlengine", body={"jobId": f"fmt_{fmt.lower()}",
                                                                "predictionInput": body}).execute()
        assert created["state"] == "QUEUED" and created["predictionInput"]["batchSize"] == "64"
    for fmt in ("JSON", "CSV", "PARQUET", "TF_RECORD"):
        job = server.wait_state(f"fmt_{fmt.lower()}", ("SUCCEEDED", "FAILED"), timeout=180)
        assert job["state"] == "SUCCEEDED", (job, server.logs(f"fmt_{fmt.lower()}")[-10:])
        out = job["predictionOutput"]
        assert out["predictionCount"] == "1500" and out["errorCount"] == "0" and out["nodeHours"] > 0
        results = read_results(work / f"out_{fmt}")
        assert len(results) == 1500
        # part-0 holds rides 0, 2, 4...; part-1 rides 1, 3, 5...
        order = list(range(0, 1500, 2)) + list(range(1, 1500, 2))
        if fmt != "CSV":
            assert [r["key"] for r in results] == order
        got = [r["prediction"] for r in results]
        tolerance = 1e-2 if fmt == "TF_RECORD" else 1e-9  # tf.train.FloatList holds float32
        assert got == pytest.approx([expected[i] for i in order], rel=tolerance)
        names = sorted(p.name for p in (work / f"out_{fmt}").iterdir())
        assert names[0] == "prediction.errors_stats-00000-of-00001"  # and no .mle-batch left
        assert names[1:] == [f"prediction.results-{i:05d}-of-{len(names) - 1:05d}" for i in range(len(names) - 1)]
    listed = ml_client(server).projects().jobs().list(parent="projects/mlengine",
                                                      filter="state=SUCCEEDED").execute()["jobs"]
    assert {"fmt_json", "fmt_csv"} <= {j["jobId"] for j in listed}


def test_cli_with_a_version_streams_progress_and_describe_shows_the_output(server: ServerProcess,
                                                                            sk_model: Path, work: Path) -> None:
    data = [{k: r[k] for k in FEATURES} for r in rides(300, seed=3)]
    data[7] = {**data[7], "pickup_latitude": "north"}  # one instance fails, the job goes on
    write_inputs(work / "cli_in", data, "JSON")
    result = server.mle("jobs", "submit", "prediction", "cli_job", "--model", "taxi_sk", "--version", "v1",
                        "--data-format", "json", "--input-paths", str(work / "cli_in" / "part-*"),
                        "--output-path", str(work / "cli_out"), "--batch-size", "16", "--stream-logs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "instances" in result.stderr and "predictionCount: '299'" in result.stdout
    described = json.loads(server.mle("jobs", "describe", "cli_job", "--format", "json", check=True).stdout)
    assert described["predictionOutput"]["predictionCount"] == "299"
    assert described["predictionOutput"]["errorCount"] == "1"
    assert described["predictionInput"]["versionName"] == "projects/mlengine/models/taxi_sk/versions/v1"
    results = read_results(work / "cli_out")
    assert len(results) == 300 and "error" in results[7] and "north" in results[7]["error"]
    assert results[8]["prediction"] == pytest.approx(online(server, [data[8]])[0])
    stats = [json.loads(line) for line in
             (work / "cli_out" / "prediction.errors_stats-00000-of-00001").read_text().splitlines()]
    assert len(stats) == 1 and stats[0]["count"] == 1 and stats[0]["example"]["pickup_latitude"] == "north"


def test_bad_input_is_refused_naming_the_field(server: ServerProcess, sk_model: Path, work: Path) -> None:
    files = write_inputs(work / "bad_in", [{k: r[k] for k in FEATURES} for r in rides(20)], "JSON")
    (work / "full").mkdir()
    (work / "full" / "x").write_text("taken")
    good = {"uri": str(sk_model), "dataFormat": "JSON", "inputPaths": [str(files[0])],
            "outputPath": str(work / "bad_out")}
    cases = [
        ({"inputPaths": [str(work / "nothing-*")]}, "predictionInput.inputPaths[0]"),
        ({"dataFormat": "XML"}, "predictionInput.dataFormat"),
        ({"outputPath": str(work / "full")}, "predictionInput.outputPath"),
        ({"uri": None, "modelName": "projects/mlengine/models/nope"}, "predictionInput.modelName"),
        ({"uri": None, "versionName": "projects/mlengine/models/taxi_sk/versions/v9"}, "predictionInput.versionName"),
        ({"uri": str(work / "no_model_here")}, "predictionInput.uri"),
        ({"batchSize": "0"}, "predictionInput.batchSize"),
        ({"outputPath": str(server.home / "stolen")}, "predictionInput.outputPath"),
        ({"keyField": "k", "dataFormat": "CSV"}, "predictionInput.keyField"),
    ]
    for change, field in cases:
        body = {k: v for k, v in {**good, **change}.items() if v is not None}
        response = create(server, "bad_job", **body)
        assert response.status_code == 400, (change, response.text)
        assert field in response.json()["error"]["message"], (change, response.text)
    assert not (work / "bad_out").exists()

    # Only known once the files are read: a job FAILED with the reason.
    assert create(server, "unreadable", **{**good, "dataFormat": "PARQUET"}).status_code == 200
    job = server.wait_state("unreadable", ("SUCCEEDED", "FAILED"), timeout=60)
    assert job["state"] == "FAILED" and "cannot be read as PARQUET" in job["errorMessage"]
    # Every instance failing fails the job; its results say why, per instance.
    text = work / "text_in.txt"
    text.write_text("a\nb\n")
    assert create(server, "all_fail", **{**good, "dataFormat": "TEXT", "inputPaths": [str(text)],
                                         "outputPath": str(work / "all_fail_out")}).status_code == 200
    job = server.wait_state("all_fail", ("SUCCEEDED", "FAILED"), timeout=60)
    assert job["state"] == "FAILED" and job["errorMessage"].startswith("Every instance failed (2)")
    assert job["predictionOutput"]["errorCount"] == "2"


@pytest.fixture(scope="module")
def slow_version(server: ServerProcess, work: Path) -> str:
    """Version slow/v1: a custom prediction routine (from its own package) that doubles ``v``
    and takes 2 ms per instance."""
    root = work / "routine"
    write_trainer(root, "")
    (root / "trainer" / "slow.py").write_text(SLOW_ROUTINE)
    package = build_package(root)
    (work / "slow_model").mkdir()
    (work / "slow_model" / "weights.txt").write_text("none")
    assert server.api("POST", MODELS, json={"name": "slow"}).status_code == 200
    response = server.api("POST", f"{MODELS}/slow/versions", json={
        "name": "v1", "deploymentUri": str(work / "slow_model"), "packageUris": [str(package)],
        "predictionClass": "trainer.slow.SlowPredictor"})
    assert response.status_code == 200, response.text
    wait_version(server, "slow", "v1")
    return "projects/mlengine/models/slow/versions/v1"


def worker_pids(job_id: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mlengine.batch.worker" in cmdline and any(job_id.encode() in part for part in cmdline):
            pids.append(int(proc.name))
    return pids


def test_a_killed_worker_resumes_without_doubling_or_losing_a_line(server: ServerProcess, slow_version: str,
                                                                   work: Path) -> None:
    n = 6000
    inputs = work / "resume_in.json"
    inputs.write_text("".join(json.dumps({"key": i, "v": i}) + "\n" for i in range(n)))
    out = work / "resume_out"
    response = create(server, "resume_job", versionName=slow_version, dataFormat="JSON", inputPaths=[str(inputs)],
                      outputPath=str(out), keyField="key", batchSize="10", maxWorkerCount="2")
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and not killed:
        job = server.job("resume_job")
        done = int(job.get("predictionOutput", {}).get("predictionCount", 0))
        if job["state"] == "RUNNING" and 0 < done < n - 2000:
            for pid in worker_pids(str(out)):
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        assert job["state"] in ("QUEUED", "PREPARING", "RUNNING"), job
        time.sleep(0.1)
    assert killed, "no worker was caught mid-job"
    job = server.wait_state("resume_job", ("SUCCEEDED", "FAILED"), timeout=180)
    assert job["state"] == "SUCCEEDED", (job, server.logs("resume_job")[-10:])
    assert job["attempt"] == 2 and job["predictionOutput"]["predictionCount"] == str(n)
    results = read_results(out)
    assert sorted(r["key"] for r in results) == list(range(n))
    assert all(r["prediction"] == 2 * r["key"] for r in results)
    assert any("Resuming" in e["message"] for e in server.logs("resume_job"))


def test_cancel_mid_job(server: ServerProcess, slow_version: str, work: Path) -> None:
    inputs = work / "cancel_in.json"
    inputs.write_text("".join(json.dumps({"v": i}) + "\n" for i in range(20000)))
    response = create(server, "cancel_job", versionName=slow_version, dataFormat="JSON", inputPaths=[str(inputs)],
                      outputPath=str(work / "cancel_out"), batchSize="10", maxWorkerCount="1")
    assert response.status_code == 200, response.text
    server.wait_state("cancel_job", ("RUNNING",), timeout=120)
    assert server.api("POST", f"{JOBS}/cancel_job:cancel").status_code == 200
    job = server.wait_state("cancel_job", ("CANCELLED", "FAILED", "SUCCEEDED"), timeout=60)
    assert job["state"] == "CANCELLED"
    assert not worker_pids(str(work / "cancel_out"))
    finished = [p for p in (work / "cancel_out").glob("prediction.results-*")]
    assert len(finished) < 20  # not every shard: stopped mid-way


def test_a_model_needs_the_creators_predict_right(server: ServerProcess, sk_model: Path, work: Path) -> None:
    """A developer of project ``scoring`` (and nothing on project mlengine) scores with
    mlengine's taxi_sk only once granted roles/ml.modelUser on that model."""
    from mlengine.client.http import Client

    admin = Client(server.url, server.token, retries=0)
    created = admin.create_token("scorer", None, user="scorer")
    admin.add_iam_policy_binding("projects/scoring", "user:scorer", "roles/ml.developer")
    files = write_inputs(work / "iam_in", [{k: r[k] for k in FEATURES} for r in rides(30)], "JSON")
    version = "projects/mlengine/models/taxi_sk/versions/v1"

    def create_as_scorer(job_id: str, **change: Any) -> Any:
        body = {"versionName": version, "dataFormat": "JSON", "inputPaths": [str(files[0])],
                "outputPath": str(work / f"{job_id}_out"), **change}
        return server.api("POST", "/v1/projects/scoring/jobs", json={"jobId": job_id, "predictionInput": body},
                          headers={"Authorization": f"Bearer {created['token']}"})

    for field, value in (("versionName", version), ("modelName", "projects/mlengine/models/taxi_sk")):
        response = create_as_scorer("iam_denied", **{"versionName": None, field: value})
        assert response.status_code == 403, response.text
        message = response.json()["error"]["message"]
        assert "'ml.models.predict'" in message and "'projects/mlengine/models/taxi_sk'" in message, message
    assert not (work / "iam_denied_out").exists()
    admin.add_iam_policy_binding("projects/mlengine/models/taxi_sk", "user:scorer", "roles/ml.modelUser")
    response = create_as_scorer("iam_allowed")
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    job = server.job("iam_allowed", project="scoring")
    while job["state"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = server.job("iam_allowed", project="scoring")
    assert job["state"] == "SUCCEEDED", job
    assert job["predictionOutput"]["predictionCount"] == "30"


def test_a_server_killed_mid_job_resumes_on_restart(server: ServerProcess, slow_version: str, work: Path) -> None:
    """kill -9 the server mid-job, and its workers with it (a machine that went down); started
    again on the same home it queues the job again, which resumes from the shards not yet done:
    exactly one result per input line."""
    n = 6000
    inputs = work / "restart_in.json"
    inputs.write_text("".join(json.dumps({"key": i, "v": i}) + "\n" for i in range(n)))
    out = work / "restart_out"
    response = create(server, "restart_job", versionName=slow_version, dataFormat="JSON", inputPaths=[str(inputs)],
                      outputPath=str(out), keyField="key", batchSize="10", maxWorkerCount="2")
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no shard was done mid-job"
        job = server.job("restart_job")
        assert job["state"] in ("QUEUED", "PREPARING", "RUNNING"), job
        done = int(job.get("predictionOutput", {}).get("predictionCount", 0))
        if job["state"] == "RUNNING" and 0 < done < n - 2000:
            break
        time.sleep(0.1)
    server.kill9()
    pids = worker_pids(str(out))
    assert pids, "the workers outlive the server"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.start()
    job = server.wait_state("restart_job", ("SUCCEEDED", "FAILED"), timeout=180)
    assert job["state"] == "SUCCEEDED", (job, server.logs("restart_job")[-10:])
    assert job["predictionOutput"]["predictionCount"] == str(n) and job["predictionOutput"]["errorCount"] == "0"
    results = read_results(out)
    assert sorted(r["key"] for r in results) == list(range(n))  # none doubled, none lost
    assert all(r["prediction"] == 2 * r["key"] for r in results)
    resumed = [e["message"] for e in server.logs("restart_job") if e["message"].startswith("Resuming")]
    assert resumed and not resumed[-1].startswith("Resuming: 0 of"), resumed
