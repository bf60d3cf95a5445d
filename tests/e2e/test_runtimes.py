"""Runtimes on a real server (issue 10, items 1, 5 and 7): jobs and versions created with
``runtimeVersion: "2.11"`` and ``pythonVersion: "3.7"`` as AI Platform clients send them, served
by a configured runtime (MLE_RUNTIMES, installed by uv) with the differences shown as
``warnings``; Google's pre-built images accepted; a Keras trainer with a TensorBoard callback
(and a Keras 2 one through tf-keras) running in the default environment.

uv runs offline with a local find-links directory: the runtime's one package is a tiny wheel,
and a trainer declaring ``tensorflow`` can only succeed if the server's tensorflow-cpu stands in.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ECHO_TRAINER, ServerProcess, build_package, job_body, short_home, write_trainer
from tests.e2e.serving_helpers import deploy, kill_serving, predict, write_sklearn_model
from tests.training.test_environments import make_wheel

from mlengine.core.runtimes import installed_version, server_python

pytestmark = pytest.mark.e2e
PY = server_python()
JOBS = "/v1/projects/mlengine/jobs"

RUNTIME_TRAINER = """
import fakeruntime
print("fakeruntime", fakeruntime.VERSION, flush=True)
"""

KERAS_TRAINER = """
import argparse, os
import numpy as np
import tensorflow as tf
import tf_keras

parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
args, _ = parser.parse_known_args()
x = np.random.default_rng(0).random((32, 3)).astype("float32")
y = x.sum(axis=1)
model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
board = tf.keras.callbacks.TensorBoard(os.path.join(args.job_dir, "logs"))
model.fit(x, y, epochs=1, batch_size=16, verbose=2, callbacks=[board])
old = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(3,))])  # a Keras 2 model
old.compile(optimizer="sgd", loss="mse")
old.fit(x, y, epochs=1, verbose=0)
print("keras trainer done with tf_keras", tf_keras.__version__, flush=True)
"""

PREDICTOR = """
import fakeruntime

class Predictor:
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        return [fakeruntime.VERSION for _ in instances]
"""


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("links")
    make_wheel(directory, "fakeruntime", "1.0", {"fakeruntime/__init__.py": "VERSION = '1.0'\n"})
    return directory


@pytest.fixture(scope="module")
def server(links: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {
        "MLE_RUNTIMES": json.dumps({"2.11": ["fakeruntime==1.0"]}),
        "UV_OFFLINE": "1", "UV_FIND_LINKS": str(links),
    }).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


def package(root: Path, code: str, requires: list[str] | None = None) -> Path:
    write_trainer(root, code, requires=requires)
    return build_package(root)


def submit(server: ServerProcess, body: dict[str, object]) -> dict[str, object]:
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def log_text(server: ServerProcess, job_id: str) -> str:
    return "\n".join(f"{e.get('severity')} {e.get('message', e.get('textPayload', ''))}"
                     for e in server.logs(job_id))


def test_a_job_with_runtime_and_python_versions_runs_on_the_configured_runtime(
        server: ServerProcess, tmp_path: Path) -> None:
    pkg = package(tmp_path, RUNTIME_TRAINER)
    created = submit(server, job_body("rt_job", pkg, runtimeVersion="2.11", pythonVersion="3.7"))
    python_warning = f"pythonVersion 3.7 requested; served by Python {PY} of this server"
    assert created["trainingInput"]["runtimeVersion"] == "2.11"  # type: ignore[index]
    assert created["trainingInput"]["pythonVersion"] == "3.7"  # type: ignore[index]
    assert created["warnings"] == [python_warning]  # runtime 2.11 is configured: only Python differs
    job = server.wait_state("rt_job", ("SUCCEEDED", "FAILED"))
    logs = log_text(server, "rt_job")
    assert job["state"] == "SUCCEEDED", (job, logs)
    assert "fakeruntime 1.0" in logs
    assert f"WARNING {python_warning}" in logs
    described = server.mle("jobs", "describe", "rt_job", "--format", "json", check=True).stdout
    assert json.loads(described)["warnings"] == [python_warning]


def test_an_unconfigured_runtime_version_is_served_by_the_server_with_a_warning(
        server: ServerProcess, tmp_path: Path) -> None:
    pkg = package(tmp_path, ECHO_TRAINER)
    created = submit(server, job_body("plain_runtime", pkg, runtimeVersion="1.15"))
    (warning,) = created["warnings"]  # type: ignore[misc]
    assert warning.startswith("runtimeVersion 1.15 requested; served by ")
    assert f"Python {PY} of this server" in warning
    tf = installed_version("tensorflow")
    if tf:
        assert f"TensorFlow {'.'.join(tf.split('.')[:2])}" in warning
    assert server.wait_state("plain_runtime", ("SUCCEEDED", "FAILED"))["state"] == "SUCCEEDED"


def test_prebuilt_images_run_the_package_other_images_are_refused(server: ServerProcess, tmp_path: Path) -> None:
    pkg = package(tmp_path, ECHO_TRAINER)
    image = "gcr.io/cloud-ml-public/training/pytorch-cpu.1-13:latest"
    created = submit(server, job_body("prebuilt", pkg, masterConfig={"imageUri": image}))
    (warning,) = created["warnings"]  # type: ignore[misc]
    assert warning.startswith(f"trainingInput.masterConfig.imageUri {image} (PyTorch 1.13) requested; served by ")
    assert server.wait_state("prebuilt", ("SUCCEEDED", "FAILED"))["state"] == "SUCCEEDED"
    assert f"WARNING {warning}" in log_text(server, "prebuilt")

    refusals = [
        (job_body("custom", pkg, masterConfig={"imageUri": "gcr.io/my-project/trainer:latest"}),
         "trainingInput.masterConfig.imageUri", "custom containers need Docker"),
        (job_body("both", pkg, runtimeVersion="2.11", masterConfig={"imageUri": image}),
         "trainingInput.runtimeVersion", "not both"),
        (job_body("mixed", pkg, scaleTier="CUSTOM", masterType="n1-standard-4", workerType="n1-standard-4",
                  workerCount=1, masterConfig={"imageUri": image},
                  workerConfig={"imageUri": "gcr.io/cloud-ml-public/training/tf-cpu.2-11.py310:latest"}),
         "trainingInput.workerConfig.imageUri", "one environment serves every replica"),
        (job_body("badpy", pkg, pythonVersion="three"), "trainingInput.pythonVersion", "Python version"),
    ]
    for body, field, text in refusals:
        response = server.api("POST", JOBS, json=body)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert field in message and text in message, message


def test_a_keras_trainer_with_a_tensorboard_callback_runs_in_the_default_environment(
        server: ServerProcess, tmp_path: Path) -> None:
    from mlengine.tuning.events import EventFileReader, event_files

    # Declares tensorflow like most trainers: offline, only the server's tensorflow-cpu can satisfy it.
    pkg = package(tmp_path / "src", KERAS_TRAINER, requires=["tensorflow>=2.0"])
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    submit(server, job_body("keras_board", pkg, jobDir=str(job_dir)))
    job = server.wait_state("keras_board", ("SUCCEEDED", "FAILED"), timeout=300)
    logs = log_text(server, "keras_board")
    assert job["state"] == "SUCCEEDED", (job, logs)
    assert "keras trainer done with tf_keras" in logs
    assert "tensorflow is provided by the server's tensorflow-cpu" in logs
    assert "warnings" not in job
    # The tuner's metric-from-summaries path reads what the callback wrote.
    files = event_files(job_dir / "logs")
    assert files, list(job_dir.rglob("*"))
    losses = [s for f in files for s in EventFileReader(f, "epoch_loss").read_new()]
    assert losses and all(s.value >= 0 for s in losses)


def test_a_version_with_runtime_and_python_versions(server: ServerProcess, tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "rtpred").mkdir(parents=True)
    (root / "rtpred" / "__init__.py").write_text(textwrap.dedent(PREDICTOR))
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='rtpred', version='0.1', "
                                   "packages=['rtpred'])\n")
    pkg = build_package(root, "rtpred")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "README").write_text("a custom routine needs no model file\n")
    operation = deploy(server, "runtimes", "v1", model_dir, runtimeVersion="2.11", pythonVersion="3.7",
                       predictionClass="rtpred.Predictor", packageUris=[str(pkg)])
    assert "error" not in operation, operation
    version = operation["response"]
    assert (version["runtimeVersion"], version["pythonVersion"]) == ("2.11", "3.7")
    assert version["warnings"] == [f"pythonVersion 3.7 requested; served by Python {PY} of this server"]
    response = predict(server, "runtimes", {"instances": [1, 2]}, version="v1")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["1.0", "1.0"]  # the runtime's package, in the version's environment

    sk = deploy(server, "runtimes", "v2", write_sklearn_model(tmp_path / "sk"), runtimeVersion="1.15",
                framework="SCIKIT_LEARN")
    assert "error" not in sk, sk
    got = server.api("GET", "/v1/projects/mlengine/models/runtimes/versions/v2").json()
    (warning,) = got["warnings"]
    assert warning.startswith("runtimeVersion 1.15 requested; served by scikit-learn ")
    bad = server.api("POST", "/v1/projects/mlengine/models/runtimes/versions",
                     json={"name": "v3", "deploymentUri": str(model_dir), "pythonVersion": "3"})
    assert bad.status_code == 400 and "pythonVersion" in bad.json()["error"]["message"]
