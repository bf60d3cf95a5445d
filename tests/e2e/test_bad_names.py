"""Issue 9 item 1: a bad path segment never reaches the store or the filesystem, and a bad row
that got into the store anyway (an older version, a hand edit) fails alone: the server starts,
the scheduler goes on."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess

pytestmark = pytest.mark.e2e

JOB = {"jobId": "ok", "trainingInput": {"pythonModule": "trainer.task", "packageUris": ["/nope.tar.gz"]}}


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/projects/" + "a" * 300 + "/jobs", "project"),
    ("/v1/projects/a%00b/jobs", "project"),
    ("/v1/projects/%2e%2e/jobs", "project"),
    ("/v1/projects/UPPER_case/jobs", "project"),
])
def test_bad_project_segments_are_refused(server: ServerProcess, path: str, field: str) -> None:
    response = server.api("POST", path, json=JOB)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and field in error["message"]
    jobs_dir = server.home / "jobs"
    assert not jobs_dir.exists() or {p.name for p in jobs_dir.iterdir()} <= {"mlengine"}
    assert not (server.home / "mlengine").exists()  # nothing escaped MLE_HOME/jobs


@pytest.mark.parametrize("path", [
    "/v1/projects/mlengine/jobs/bad%00id",
    "/v1/projects/mlengine/jobs/" + "j" * 200,
    "/v1/projects/mlengine/models/%2e%2e",
    "/v1/projects/mlengine/models/m/versions/%2e%2e",
    "/v1/projects/mlengine/operations/%00",
])
def test_bad_resource_segments_are_refused(server: ServerProcess, path: str) -> None:
    response = server.api("GET", path)
    assert response.status_code == 400, (path, response.text)
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_bad_row_fails_alone_and_the_server_restarts(server_factory, tmp_path: Path) -> None:
    server = server_factory()
    server.stop()
    db = sqlite3.connect(server.home / "mlengine.db")
    for job_id, state in (("bad\x00row", "PREPARING"), ("x" * 250, "QUEUED"), ("ghost", "RUNNING")):
        db.execute(
            "INSERT INTO jobs (project, job_id, kind, state, create_time, error_message, input, output, labels, "
            "labels_version, scheduling, kind_state, version) VALUES ('mlengine', ?, ?, ?, CURRENT_TIMESTAMP, '', "
            "'{\"pythonModule\": \"m\", \"packageUris\": [\"/nope.tar.gz\"]}', '{}', '{}', 0, '{}', '{}', 1)",
            (job_id, "training" if job_id != "ghost" else "no-such-kind", state))
    db.commit()
    db.close()
    server.start()  # reconciliation survives every bad row
    deadline = time.monotonic() + 30
    while True:
        listed = {j["jobId"]: j for j in server.api("GET", "/v1/projects/mlengine/jobs").json()["jobs"]}
        if all(j["state"] == "FAILED" for j in listed.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {j["state"] for j in listed.values()} == {"FAILED"}, listed
    assert "no-such-kind" in listed["ghost"]["errorMessage"]
    assert len(listed) == 3
    # The server still validates and serves: a new job with a missing package is refused by name.
    response = server.api("POST", "/v1/projects/mlengine/jobs", json=JOB)
    assert response.status_code == 400 and "packageUris[0]" in response.text


def _token(offsets: dict[str, int]) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(offsets).encode()).decode()


@pytest.mark.parametrize(("method", "path", "kwargs", "needle"), [
    ("POST", "/v1/projects/mlengine/jobs", {"content": "[" * 100_000 + "]" * 100_000}, "nested deeper"),
    ("POST", "/v1/projects/mlengine/jobs", {"content": '{"a":' * 200 + "1" + "}" * 200}, "nested deeper"),
    ("POST", "/v1/projects/mlengine/jobs", {"content": b"\xff\xfe{"}, "Invalid JSON"),
    ("GET", "/v1/projects/mlengine/jobs", {"params": {"filter": 'jobId="\\x"'}}, "bad escape"),
    ("GET", "/v1/projects/mlengine/jobs", {"params": {"filter": "(" * 1000 + "a=1" + ")" * 1000}}, "filter"),
    ("GET", "/v1/projects/mlengine/jobs", {"params": {"filter": " OR ".join(["a=1"] * 3000)}}, "filter"),
    ("GET", "/v1/projects/mlengine/jobs", {"params": {"filter": " OR ".join(["a=1"] * 500)}}, "comparisons"),
    ("GET", "/v1/projects/mlengine/models", {"params": {"filter": "NOT " * 100 + "a=1"}}, "filter"),
])
def test_hostile_input_is_a_400_naming_the_problem(server: ServerProcess, method: str, path: str,
                                                   kwargs: dict, needle: str) -> None:
    response = server.api(method, path, **kwargs)
    assert response.status_code == 400, response.text[:300]
    assert needle in response.json()["error"]["message"]
    assert server.api("GET", "/v1/projects/mlengine/jobs").status_code == 200  # still serving


def test_log_cursors_with_bad_offsets(server: ServerProcess, echo_package: Path) -> None:
    job = {"jobId": "logs_cursor", "trainingInput": {"pythonModule": "trainer.task",
                                                      "packageUris": [str(echo_package)]}}
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=job).status_code == 200
    for offsets in ({"service": -5}, {"service": 2**70}, {"service": True}):
        response = server.api("GET", "/v1/projects/mlengine/jobs/logs_cursor/logs",
                              params={"pageToken": _token(offsets)})
        assert response.status_code == 400, response.text
        assert "pageToken" in response.json()["error"]["message"]
    response = server.api("GET", "/v1/projects/mlengine/jobs/logs_cursor/logs", params={"pageToken": "%%%"})
    assert response.status_code == 400
