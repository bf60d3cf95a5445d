"""The taxifare sample, end to end: local train, then the same package submitted to a real
server through the CLI and through googleapiclient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.e2e.helpers import REPO, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = REPO / "samples" / "taxifare"
DATA = SAMPLE / "data"
TINY = ["--train-data-paths", str(DATA / "taxi-train.csv"), "--eval-data-paths", str(DATA / "taxi-valid.csv"),
        "--train-steps", "10", "--batch-size", "32", "--eval-steps", "5"]

pytest.importorskip("tensorflow")


def _saved_models(job_dir: Path) -> list[Path]:
    return sorted(job_dir.glob("export/*/saved_model.pb"))


def test_local_train(server: ServerProcess, tmp_path: Path) -> None:
    job_dir = tmp_path / "local"
    result = server.mle("local", "train", "--package-path", str(SAMPLE / "trainer"),
                        "--module-name", "trainer.task", "--job-dir", str(job_dir), "--", *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "eval rmse" in result.stdout + result.stderr
    assert _saved_models(job_dir)


def test_submit_with_cli_stream_logs(server: ServerProcess, tmp_path: Path) -> None:
    job_dir = tmp_path / "cli-job"
    result = server.mle(
        "jobs", "submit", "training", "taxifare_cli", "--package-path", str(SAMPLE / "trainer"),
        "--module-name", "trainer.task", "--job-dir", str(job_dir), "--region", "local",
        "--labels", "sample=taxifare", "--stream-logs", "--", *TINY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job = server.job("taxifare_cli")
    assert job["state"] == "SUCCEEDED"
    assert job["labels"] == {"sample": "taxifare"}
    # the package was staged under <job-dir>/packages/<sha256>/
    [uri] = job["trainingInput"]["packageUris"]
    assert "/packages/" in uri and str(job_dir) in uri
    # logs hold the trainer's output, streamed and stored
    assert "eval rmse" in result.stdout
    messages = [e["message"] for e in server.logs("taxifare_cli", "master-replica-0")]
    assert any(m.startswith("Exported SavedModel to") for m in messages)
    # outputs under the job dir: SavedModel, checkpoints, TensorBoard summaries
    assert _saved_models(job_dir)
    assert list(job_dir.glob("checkpoints/*"))
    assert list(job_dir.glob("tensorboard/**/events.out.tfevents.*"))
    tf_config = json.loads((job_dir / "tf_config_master_0.json").read_text())
    assert tf_config["task"] == {"type": "master", "index": 0}
    assert tf_config["environment"] == "cloud"
    assert tf_config["job"]["jobDir"] == str(job_dir)
    assert list(tf_config["cluster"]) == ["master"]

    described = server.mle("jobs", "describe", "taxifare_cli", "--format", "json", check=True)
    assert json.loads(described.stdout)["state"] == "SUCCEEDED"
    listed = server.mle("jobs", "list", "--filter", "labels.sample=taxifare", check=True)
    assert "taxifare_cli" in listed.stdout and "SUCCEEDED" in listed.stdout


def test_submit_with_googleapiclient(server: ServerProcess, tmp_path: Path) -> None:
    from google.oauth2.credentials import Credentials
    from googleapiclient import discovery

    from mlengine.core.packaging import build_sdist

    package = build_sdist(SAMPLE / "trainer", tmp_path / "dist")
    job_dir = tmp_path / "gapi-job"
    ml = discovery.build("ml", "v1", credentials=Credentials(token=server.token),
                         client_options={"api_endpoint": server.url + "/"}, cache_discovery=False)
    body = {"jobId": "taxifare_gapi", "trainingInput": {
        "scaleTier": "BASIC", "packageUris": [str(package)], "pythonModule": "trainer.task",
        "args": TINY, "region": "local", "jobDir": str(job_dir), "runtimeVersion": "2.11",
        "pythonVersion": "3.7"}}
    ml.projects().jobs().create(parent="projects/mlengine", body=body).execute()
    job = server.wait_state("taxifare_gapi", ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=240)
    assert job["state"] == "SUCCEEDED", job
    assert _saved_models(job_dir)
