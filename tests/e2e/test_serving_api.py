"""Models, versions, operations and online prediction on a real server: the CLI, the official
Google API client and plain HTTP agree, bad requests get exact answers, unsafe directories and
broken models are refused."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, build_package, short_home
from tests.e2e.serving_helpers import MODELS, deploy, kill_serving, predict, wait_operation, write_sklearn_model
from tests.e2e.test_googleapiclient import ml_client

pytestmark = pytest.mark.e2e
ROWS = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def sk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sklearn_model(tmp_path_factory.mktemp("sk") / "model")


@pytest.fixture(scope="module")
def fares(server: ServerProcess, sk_dir: Path) -> str:
    """Model 'fares' with READY version v1 (scikit-learn), deployed once for the module."""
    assert deploy(server, "fares", "v1", sk_dir).get("response", {}).get("state") == "READY"
    return "fares"


def test_sklearn_through_cli_googleapiclient_http_and_local(server: ServerProcess, sk_dir: Path,
                                                            tmp_path: Path) -> None:
    server.mle("models", "create", "clifares", "--description", "fares", check=True)
    created = server.mle("versions", "create", "v1", "--model", "clifares", "--origin", str(sk_dir),
                         "--framework", "scikit-learn", "--min-nodes", "1", check=True)
    assert "Created version [v1] of model [clifares]." in created.stderr
    described = json.loads(server.mle("versions", "describe", "v1", "--model", "clifares", "--format", "json",
                                      check=True).stdout)
    assert described["state"] == "READY" and described["isDefault"] is True
    assert described["framework"] == "SCIKIT_LEARN" and described["autoScaling"] == {"minNodes": 1}
    listed = server.mle("versions", "list", "--model", "clifares", check=True).stdout
    assert "v1" in listed and "READY" in listed
    assert "clifares" in server.mle("models", "list", check=True).stdout

    instances = tmp_path / "rows.json"
    instances.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    via_cli = json.loads(server.mle("predict", "--model", "clifares", "--json-instances", str(instances),
                                    "--format", "json", check=True).stdout)["predictions"]
    table = server.mle("predict", "--model", "clifares", "--version", "v1", "--json-instances", str(instances),
                       check=True).stdout.splitlines()
    assert table[0] == "PREDICTIONS" and [float(x) for x in table[1:]] == via_cli

    ml = ml_client(server)
    via_google = ml.projects().predict(name="projects/mlengine/models/clifares",
                                       body={"instances": ROWS}).execute()["predictions"]
    via_google_version = ml.projects().predict(name="projects/mlengine/models/clifares/versions/v1",
                                               body={"instances": ROWS}).execute()["predictions"]
    response = predict(server, "clifares", {"instances": ROWS})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    local = json.loads(server.mle("local", "predict", "--model-dir", str(sk_dir), "--json-instances",
                                  str(instances), "--format", "json", check=True).stdout)["predictions"]
    assert via_cli == via_google == via_google_version == response.json()["predictions"] == local

    model = ml.projects().models().get(name="projects/mlengine/models/clifares").execute()
    assert model["defaultVersion"]["name"] == "projects/mlengine/models/clifares/versions/v1"
    versions = ml.projects().models().versions().list(parent="projects/mlengine/models/clifares").execute()
    assert [v["name"].rsplit("/", 1)[-1] for v in versions["versions"]] == ["v1"]


def test_versions_default_deletion_rules_and_operations(server: ServerProcess, sk_dir: Path, tmp_path: Path) -> None:
    import joblib

    other = tmp_path / "other"
    other.mkdir()
    pipeline = joblib.load(sk_dir / "model.joblib")
    pipeline.steps[-1][1].intercept_ += 100.0
    joblib.dump(pipeline, other / "model.joblib")
    deploy(server, "rules", "a", sk_dir)
    deploy(server, "rules", "b", other, labels={"stage": "test"})
    a = predict(server, "rules", {"instances": ROWS[:1]}).json()["predictions"][0]
    assert predict(server, "rules", {"instances": ROWS[:1]}, version="b").json()["predictions"][0] == pytest.approx(
        a + 100.0)

    refused = server.api("DELETE", f"{MODELS}/rules")
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert "still has 2 version(s) (a, b); delete them before the model" in refused.json()["error"]["message"]
    refused = server.api("DELETE", f"{MODELS}/rules/versions/a")
    assert refused.status_code == 400 and "it is the default version of model rules" in refused.text

    made_default = server.api("POST", f"{MODELS}/rules/versions/b:setDefault", json={})
    assert made_default.status_code == 200 and made_default.json()["isDefault"] is True
    assert predict(server, "rules", {"instances": ROWS[:1]}).json()["predictions"][0] == pytest.approx(a + 100.0)

    patched = server.api("PATCH", f"{MODELS}/rules/versions/b", params={"updateMask": "labels,autoScaling.minNodes"},
                         json={"labels": {"stage": "prod"}, "autoScaling": {"minNodes": 1}})
    assert patched.status_code == 200 and patched.json()["done"] is True
    version = server.api("GET", f"{MODELS}/rules/versions/b").json()
    assert version["labels"] == {"stage": "prod"} and version["autoScaling"] == {"minNodes": 1}
    bad_mask = server.api("PATCH", f"{MODELS}/rules/versions/b", params={"updateMask": "deploymentUri"}, json={})
    assert bad_mask.status_code == 400 and "'deploymentUri' cannot be updated" in bad_mask.text
    model_patch = server.api("PATCH", f"{MODELS}/rules", params={"updateMask": "description"},
                             json={"description": "two versions"})
    assert model_patch.status_code == 200
    assert server.api("GET", f"{MODELS}/rules").json()["description"] == "two versions"

    deleted = wait_operation(server, server.api("DELETE", f"{MODELS}/rules/versions/a").json())
    assert deleted["metadata"]["operationType"] == "DELETE_VERSION" and "error" not in deleted
    assert server.api("GET", f"{MODELS}/rules/versions/a").status_code == 404
    assert predict(server, "rules", {"instances": ROWS[:1]}, version="a").status_code == 404
    ops = server.api("GET", "/v1/projects/mlengine/operations",
                     params={"filter": "metadata.modelName=projects/mlengine/models/rules"}).json()["operations"]
    assert {op["metadata"]["operationType"] for op in ops} >= {"CREATE_VERSION", "DELETE_VERSION"}
    assert all(op["done"] for op in ops)
    done = server.api("POST", f"/v1/{ops[0]['name']}:cancel", json={})
    assert done.status_code == 400 and "already done" in done.text

    wait_operation(server, server.api("DELETE", f"{MODELS}/rules/versions/b").json())
    assert "defaultVersion" not in server.api("GET", f"{MODELS}/rules").json()
    assert server.api("DELETE", f"{MODELS}/rules").json()["done"] is True
    assert server.api("GET", f"{MODELS}/rules").status_code == 404


BIG = b'{"instances": [' + b",".join([b"[1.0, 2.0, 3.0]"] * 110_000) + b"]}"


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    (b"{nope", {}, 400, "The request body is not valid JSON: Expecting property name enclosed in double quotes: "
                        "line 1 column 2 (char 1)"),
    (b'{"rows": []}', {}, 400, 'The request body has no "instances" field; expected {"instances": [...]}.'),
    (b'{"instances": [[1, 2]]}', {}, 400, "Instance 0 has 2 values, but the model expects 3 features."),
    (b'{"instances": [[1, "two", 3]]}', {}, 400, "Instance 0, feature 1: expected a number, got str 'two'."),
    (b'{"instances": [{"a": 1, "b": 2, "c": 3}]}', {}, 400,
     "Instance 0 is an object, but this model takes rows of numbers: send a list of 3 numbers."),
    (b'{"instances": [[1, NaN, 3]]}', {}, 400, "Instance 0, feature 1: NaN is not accepted by this model (it cannot "
                                               "take missing or infinite values)."),
    (b'{"instances": [[1, 2, -Infinity]]}', {}, 400, "Instance 0, feature 2: Infinity is not accepted by this model "
                                                     "(it cannot take missing or infinite values)."),
    (BIG, {}, 413, f"The request body of {len(BIG)} bytes exceeds the limit of 1572864 bytes "
                   "(MLE_PREDICT_MAX_BODY_BYTES); send fewer instances per request."),
    (b"\x80\x03cos\nsystem\n.", {"content-type": "application/python-pickle"}, 415,
     "Only JSON request bodies are accepted (Content-Type: application/json), not 'application/python-pickle'."),
])
def test_bad_requests_get_exact_status_and_message(server: ServerProcess, fares: str, body: bytes,
                                                   headers: dict[str, str], status: int, message: str) -> None:
    response = server.api("POST", f"{MODELS}/{fares}:predict", content=body,
                          headers={"content-type": "application/json", **headers})
    assert response.status_code == status
    assert response.json() == {"error": message}


def test_chunked_oversized_unknown_and_unauthenticated(server: ServerProcess, fares: str) -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(BIG), 65536):
            yield BIG[i:i + 65536]

    response = server.api("POST", f"{MODELS}/{fares}:predict", content=chunks())
    assert response.status_code == 413
    assert response.json() == {"error": "The request body exceeds the limit of 1572864 bytes "
                                        "(MLE_PREDICT_MAX_BODY_BYTES); send fewer instances per request."}
    missing = predict(server, "nope", {"instances": ROWS})
    assert missing.status_code == 404 and missing.json() == {"error": "Model projects/mlengine/models/nope not found."}
    missing = predict(server, fares, {"instances": ROWS}, version="v9")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Version projects/mlengine/models/fares/versions/v9 not found."}
    with httpx.Client(base_url=server.url) as anonymous:
        denied = anonymous.post(f"{MODELS}/{fares}:predict", json={"instances": ROWS})
    assert denied.status_code == 401 and denied.json()["error"]["status"] == "UNAUTHENTICATED"
    assert predict(server, fares, {"instances": ROWS}).status_code == 200  # the server is fine after all that


def test_unsafe_directories_are_refused_and_broken_models_fail(server: ServerProcess, tmp_path: Path) -> None:
    assert server.api("POST", MODELS, json={"name": "unsafe"}).status_code == 200
    secret = tmp_path / "secret"
    secret.write_text("do not read")
    escaping = write_sklearn_model(tmp_path / "escaping")
    os.symlink(secret, escaping / "extra.bin")
    response = server.api("POST", f"{MODELS}/unsafe/versions", json={"name": "v1", "deploymentUri": str(escaping)})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Field: deploymentUri Error: {escaping}: 'extra.bin' is a symbolic link to '{secret}', outside the "
        "directory; nothing outside the model directory is ever read")
    assert server.api("GET", f"{MODELS}/unsafe/versions/v1").status_code == 404

    relative = tmp_path / "relative"
    relative.mkdir()
    (relative / "model.joblib").write_bytes(b"x")
    os.symlink("../secret", relative / "up")
    response = server.api("POST", f"{MODELS}/unsafe/versions", json={"name": "v1", "deploymentUri": str(relative)})
    assert response.status_code == 400 and "'up' is a symbolic link to '../secret', outside" in response.text

    empty = tmp_path / "nomodel"
    empty.mkdir()
    (empty / "README").write_text("no model here")
    response = server.api("POST", f"{MODELS}/unsafe/versions", json={"name": "v1", "deploymentUri": str(empty)})
    assert response.status_code == 400 and "holds no model file" in response.text

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"definitely not a pickle")
    operation = deploy(server, "unsafe", "broken", broken)
    assert operation["error"]["code"] == 3
    assert operation["error"]["message"].startswith("Failed to load the model: Could not load model.joblib: ")
    version = server.api("GET", f"{MODELS}/unsafe/versions/broken").json()
    assert version["state"] == "FAILED" and version["errorMessage"] == operation["error"]["message"]
    answer = predict(server, "unsafe", {"instances": ROWS}, version="broken")
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Version broken of model unsafe failed to deploy: Failed to load")


PREDICTOR = '''
import math, os
import joblib


class FarePredictor:
    """Raw taxi rides in, fares out: the preprocessing travels with the model."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_path(cls, model_dir):
        return cls(joblib.load(os.path.join(model_dir, "model.joblib")))

    @staticmethod
    def features(ride):
        dx = (ride["dropoff_longitude"] - ride["pickup_longitude"]) * 84.2
        dy = (ride["dropoff_latitude"] - ride["pickup_latitude"]) * 111.0
        hour = int(ride["pickup_datetime"][11:13])
        return [math.hypot(dx, dy), hour, float(ride["passenger_count"])]

    def predict(self, instances, **kwargs):
        rate = kwargs.get("rate", 1.0)
        fares = self.model.predict([self.features(ride) for ride in instances])
        return [round(float(fare) * rate, 6) for fare in fares]
'''


def test_custom_prediction_routine_serves_raw_instances(server: ServerProcess, tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    root = tmp_path / "src"
    (root / "farepred").mkdir(parents=True)
    (root / "farepred" / "__init__.py").write_text(textwrap.dedent(PREDICTOR))
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='farepred', version='0.1', "
                                   "packages=['farepred'])\n")
    package = build_package(root, "farepred")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = LinearRegression().fit([[1, 8, 1], [2, 9, 1], [3, 20, 2], [5, 3, 1]], [5.0, 7.5, 10.0, 14.0])
    joblib.dump(model, model_dir / "model.joblib")
    operation = deploy(server, "cpr", "v1", model_dir, predictionClass="farepred.FarePredictor",
                       packageUris=[str(package)])
    assert "error" not in operation, operation
    rides = [json.loads(line) for line in (Path(__file__).parents[2] / "samples/taxifare/instances.json")
             .read_text().splitlines() if line.strip()]
    response = predict(server, "cpr", {"instances": rides, "rate": 2.0})
    assert response.status_code == 200, response.text
    import importlib.util

    spec = importlib.util.spec_from_file_location("farepred_local", root / "farepred" / "__init__.py")
    assert spec and spec.loader
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    expected = local.FarePredictor(model).predict(rides, rate=2.0)
    assert response.json() == {"predictions": expected}
    bad = predict(server, "cpr", {"instances": [{"pickup_datetime": "x"}]})
    assert bad.status_code == 400 and bad.json() == {"error": "Prediction failed: KeyError: 'dropoff_longitude'"}
