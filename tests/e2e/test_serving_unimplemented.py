"""What the server does not implement says so: every ml v1 method of the discovery document
answers for real or 501 UNIMPLEMENTED naming the method (never a 404/405 for a documented
path), and Version/Model fields that would do nothing are refused with 501 naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, deploy, kill_serving, write_sklearn_model

from mlengine.api.discovery import document_path, methods

pytestmark = pytest.mark.e2e
NOT_FOUND_URL = "was not found on this server"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


def discovery_methods() -> list[tuple[str, str, str]]:
    """(id, HTTP method, concrete flat path) of every method of the ml v1 discovery document."""
    path = document_path()
    assert path is not None, "google-api-python-client ships the ml v1 discovery document"
    document = json.loads(path.read_text())
    found = []
    for method in methods(document):
        found.append((method.id, method.http_method, re.sub(r"\{[^}]+\}", "x1", method.flat_path)))
        if method.wildcard:  # e.g. {+name}:predict on a model and on a version
            for name in ("projects/x1/models/x1", "projects/x1/models/x1/versions/x1"):
                found.append((method.id, method.http_method, "/v1/" + name + ":" + method.flat_path.rsplit(":")[-1]))
    return found


IMPLEMENTED = {"ml.projects.predict", "ml.projects.models.create", "ml.projects.models.get",
               "ml.projects.models.list", "ml.projects.models.patch", "ml.projects.models.delete",
               "ml.projects.models.versions.create", "ml.projects.models.versions.get",
               "ml.projects.models.versions.list", "ml.projects.models.versions.patch",
               "ml.projects.models.versions.delete", "ml.projects.models.versions.setDefault",
               "ml.projects.operations.get", "ml.projects.operations.list", "ml.projects.operations.cancel",
               "ml.projects.jobs.create", "ml.projects.jobs.get", "ml.projects.jobs.list", "ml.projects.jobs.patch",
               "ml.projects.jobs.cancel", "ml.projects.jobs.getIamPolicy", "ml.projects.jobs.setIamPolicy",
               "ml.projects.jobs.testIamPermissions", "ml.projects.models.getIamPolicy",
               "ml.projects.models.setIamPolicy", "ml.projects.models.testIamPermissions",
               # the Optimizer (Vizier) API and getConfig (issue 10.8)
               "ml.projects.getConfig", "ml.projects.locations.get", "ml.projects.locations.list",
               "ml.projects.locations.operations.get", "ml.projects.locations.operations.cancel",
               *(f"ml.projects.locations.studies.{m}" for m in ("create", "get", "list", "delete")),
               *(f"ml.projects.locations.studies.trials.{m}" for m in (
                   "create", "get", "list", "delete", "suggest", "addMeasurement", "checkEarlyStoppingState",
                   "complete", "stop", "listOptimalTrials"))}


def test_every_discovery_method_answers_for_real_or_501(server: ServerProcess) -> None:
    seen = set()
    with server.client as admin, httpx.Client(base_url=server.url, timeout=10) as anonymous:
        for method_id, http, path in discovery_methods():
            seen.add(method_id)
            body = {} if http in ("POST", "PATCH", "PUT") else None
            response = admin.request(http, path, json=body)
            text = response.text
            assert response.status_code != 405, (method_id, path, text)
            assert not (response.status_code == 404 and NOT_FOUND_URL in text), (method_id, path, text)
            assert response.status_code < 500 or response.status_code == 501, (method_id, path, text)
            if method_id in IMPLEMENTED:
                assert response.status_code != 501, (method_id, path, text)
                continue
            assert response.status_code == 501, (method_id, path, text)
            error = response.json()["error"]
            assert error["status"] == "UNIMPLEMENTED" and f"Method {method_id} " in error["message"], error
            denied = anonymous.request(http, path, json=body)
            assert denied.status_code == 401 and denied.json()["error"]["status"] == "UNAUTHENTICATED"
    assert seen >= IMPLEMENTED and len(seen) > len(IMPLEMENTED)


def test_model_iam_policy_is_the_models_not_a_missing_model(server: ServerProcess) -> None:
    assert server.api("POST", MODELS, json={"name": "iam"}).status_code == 200
    response = server.api("GET", f"{MODELS}/iam:getIamPolicy")
    assert response.status_code == 200, response.text
    assert response.json()["bindings"] == [{"role": "roles/ml.modelOwner", "members": ["user:admin"]}]
    assert server.api("GET", f"{MODELS}/nope:getIamPolicy").status_code == 404
    assert server.api("GET", f"{MODELS}/iam").status_code == 200
    project_predict = server.api("POST", "/v1/projects/mlengine:predict", json={"instances": [1]})
    assert project_predict.status_code == 400 and "Field: name" in project_predict.text

    from googleapiclient.errors import HttpError
    from tests.e2e.test_googleapiclient import ml_client

    ml = ml_client(server)
    assert ml.projects().models().getIamPolicy(resource="projects/mlengine/models/iam").execute()["etag"]
    with pytest.raises(HttpError) as info:
        ml.projects().explain(name="projects/mlengine/models/iam", body={}).execute()
    assert info.value.resp.status == 501


@pytest.mark.parametrize(("field", "value"), [
    ("acceleratorConfig", {"count": 1, "type": "NVIDIA_TESLA_T4"}),
    ("container", {"image": "gcr.io/x/y"}),
    ("routes", {"predict": "/p"}),
    ("serviceAccount", "sa@example.com"),
    ("explanationConfig", {"sampledShapleyAttribution": {"numPaths": 2}}),
])
def test_version_fields_that_would_do_nothing_are_501(server: ServerProcess, tmp_path: Path, field: str,
                                                      value: object) -> None:
    if server.api("GET", f"{MODELS}/fields").status_code == 404:
        assert server.api("POST", MODELS, json={"name": "fields"}).status_code == 200
    response = server.api("POST", f"{MODELS}/fields/versions",
                          json={"name": "v1", "deploymentUri": str(tmp_path), field: value})
    assert response.status_code == 501, response.text
    error = response.json()["error"]
    assert error["status"] == "UNIMPLEMENTED" and error["message"].startswith(f"Field: {field} Error: not implemented")
    assert server.api("GET", f"{MODELS}/fields/versions/v1").status_code == 404


@pytest.mark.parametrize("flag", ["onlinePredictionLogging", "onlinePredictionConsoleLogging"])
def test_model_logging_flags_are_501_when_set(server: ServerProcess, flag: str) -> None:
    response = server.api("POST", MODELS, json={"name": f"flag{len(flag)}", flag: True})
    assert response.status_code == 501 and f"Field: {flag} Error: not implemented" in response.text
    off = server.api("POST", MODELS, json={"name": f"off{len(flag)}", flag: False, "regions": ["us-central1"]})
    assert off.status_code == 200 and off.json()["regions"] == ["us-central1"]


def test_machine_type_and_runtime_version_work(server: ServerProcess, tmp_path: Path) -> None:
    model_dir = write_sklearn_model(tmp_path / "model")
    assert server.api("POST", MODELS, json={"name": "machines"}).status_code == 200
    bad = server.api("POST", f"{MODELS}/machines/versions",
                     json={"name": "v1", "deploymentUri": str(model_dir), "machineType": "n1-giant-96"})
    assert bad.status_code == 400 and "'n1-giant-96' is not a prediction machine type" in bad.text
    operation = deploy(server, "machines", "v1", model_dir, machineType="mls1-c1-m2", runtimeVersion="2.11")
    assert operation["response"]["machineType"] == "mls1-c1-m2"
    assert operation["response"]["runtimeVersion"] == "2.11"
    patched = server.api("PATCH", f"{MODELS}/machines/versions/v1", params={"updateMask": "requestLoggingConfig"},
                         json={"requestLoggingConfig": {"samplingPercentage": 0.5}})  # implemented by issue 12
    assert patched.status_code == 200, patched.text
    version = server.api("GET", f"{MODELS}/machines/versions/v1").json()
    assert version["requestLoggingConfig"] == {"samplingPercentage": 0.5}
