"""Jobs through the REST API of a real server: lifecycle, trainer environment, bad input."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, job_body

pytestmark = pytest.mark.e2e
JOBS = "/v1/projects/mlengine/jobs"


def test_job_succeeds_with_documented_environment(server: ServerProcess, echo_package: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    job_dir = tmp_path / "job-dir"
    body = job_body("echo_ok", echo_package, ["--out", str(out)], jobDir=str(job_dir))
    body["labels"] = {"team": "ml"}
    created = server.api("POST", JOBS, json=body)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["jobId"] == "echo_ok" and job["state"] in ("QUEUED", "PREPARING", "RUNNING")
    assert job["labels"] == {"team": "ml"} and job["etag"] and job["createTime"].endswith("Z")

    done = server.wait_state("echo_ok", ("SUCCEEDED", "FAILED"))
    assert done["state"] == "SUCCEEDED", done
    assert done["startTime"] <= done["endTime"]

    seen = json.loads(out.read_text())
    assert seen["argv"][-2:] == ["--job-dir", str(job_dir)]
    tf_config = json.loads(seen["env"]["TF_CONFIG"])
    assert tf_config["task"] == {"type": "master", "index": 0}
    assert list(tf_config["cluster"]) == ["master"] and len(tf_config["cluster"]["master"]) == 1
    assert tf_config["environment"] == "cloud"
    assert tf_config["job"]["pythonModule"] == "trainer.task"
    assert json.loads(seen["env"]["CLUSTER_SPEC"]) == tf_config
    assert seen["env"]["CLOUD_ML_JOB_ID"] == "echo_ok"
    assert seen["env"]["PYTHONUNBUFFERED"] == "1"
    assert "echo_ok" in seen["env"]["CLOUD_ML_HP_METRIC_FILE"]
    # the working directory is private to the replica
    assert "echo_ok" in seen["cwd"] and "master-replica-0" in seen["cwd"]

    entries = server.logs("echo_ok")
    messages = [(e["taskName"], e["severity"], e["message"]) for e in entries]
    assert ("master-replica-0", "INFO", "hello from the trainer") in messages
    assert ("master-replica-0", "ERROR", "a warning on stderr") in messages
    assert any(task == "service" for task, _, _ in messages)
    assert all(e["timestamp"].endswith("Z") for e in entries)
    only_master = server.logs("echo_ok", "master-replica-0")
    assert {e["taskName"] for e in only_master} == {"master-replica-0"}


def test_failing_trainer_fails_job_with_its_last_lines(server: ServerProcess, echo_package: Path) -> None:
    server.api("POST", JOBS, json=job_body("echo_fail", echo_package, ["--exit-code", "3"]))
    job = server.wait_state("echo_fail", ("SUCCEEDED", "FAILED"))
    assert job["state"] == "FAILED"
    assert "master-replica-0 exited with a non-zero status of 3" in job["errorMessage"]
    assert "trainer failing on purpose" in job["errorMessage"]


def test_missing_module_fails_with_a_clear_message(server: ServerProcess, echo_package: Path) -> None:
    body = job_body("no_module", echo_package)
    body["trainingInput"]["pythonModule"] = "trainer.nothere"
    server.api("POST", JOBS, json=body)
    job = server.wait_state("no_module", ("FAILED", "SUCCEEDED"))
    assert job["state"] == "FAILED"
    assert "trainer.nothere" in job["errorMessage"] and "not found" in job["errorMessage"]


def test_list_filter_pagination_and_patch(server: ServerProcess, echo_package: Path) -> None:
    for i in range(3):
        body = job_body(f"listed_{i}", echo_package)
        body["labels"] = {"batch": "b1", "n": str(i)}
        assert server.api("POST", JOBS, json=body).status_code == 200
    page = server.api("GET", JOBS, params={"filter": "labels.batch=b1", "pageSize": 2}).json()
    assert [j["jobId"] for j in page["jobs"]] == ["listed_2", "listed_1"]
    rest = server.api("GET", JOBS, params={"filter": "labels.batch=b1", "pageSize": 2,
                                           "pageToken": page["nextPageToken"]}).json()
    assert [j["jobId"] for j in rest["jobs"]] == ["listed_0"] and "nextPageToken" not in rest

    job = server.job("listed_0")
    patched = server.api("PATCH", f"{JOBS}/listed_0", params={"updateMask": "labels"},
                         json={"labels": {"batch": "b2"}, "etag": job["etag"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["labels"] == {"batch": "b2"}
    stale = server.api("PATCH", f"{JOBS}/listed_0", params={"updateMask": "labels"},
                       json={"labels": {"batch": "b3"}, "etag": job["etag"]})
    assert stale.status_code == 409 and stale.json()["error"]["status"] == "ABORTED"
    bad_mask = server.api("PATCH", f"{JOBS}/listed_0", params={"updateMask": "state"},
                          json={"state": "FAILED"})
    assert bad_mask.status_code == 400 and "updateMask" in bad_mask.json()["error"]["message"]


def _evil_archive(tmp_path: Path, member: str) -> Path:
    path = tmp_path / "evil-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"print('hi')"
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "status", "needle"),
    [
        (lambda b: b.update(jobId="1starts_with_digit"), 400, "jobId"),
        (lambda b: b.update(jobId="has-dash"), 400, "jobId"),
        (lambda b: b.update(jobId="x" * 129), 400, "jobId"),
        (lambda b: b["trainingInput"].pop("pythonModule"), 400, "trainingInput.pythonModule"),
        (lambda b: b["trainingInput"].update(scaleTier="HUGE_1"), 400, "trainingInput.scaleTier"),
        (lambda b: b["trainingInput"].update(packageUris=[]), 400, "trainingInput.packageUris"),
        (lambda b: b["trainingInput"].update(packageUris=["/nonexistent/pkg.tar.gz"]), 400,
         "trainingInput.packageUris[0]"),
        (lambda b: b["trainingInput"].update(jobDir="gs://bucket/dir"), 400, "trainingInput.jobDir"),
        (lambda b: b["trainingInput"].update(jobDir="nosuchscheme://x/y"), 400, "trainingInput.jobDir"),
        (lambda b: b["trainingInput"].update(scheduling={"maxRunningTime": "soon"}), 400,
         "trainingInput.scheduling.maxRunningTime"),
        (lambda b: b["trainingInput"].update(workerCount="2"), 400, "trainingInput.workerCount"),
        (lambda b: b["trainingInput"].update(typoField=1), 400, "trainingInput.typoField"),
        (lambda b: b.update(labels={"Bad Key": "x"}), 400, "labels"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_created(server: ServerProcess, echo_package: Path,
                                                     mutate, status: int, needle: str) -> None:
    body = job_body("bad_input_job", echo_package)
    mutate(body)
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["status"] == "INVALID_ARGUMENT"
    assert needle in error["message"]
    listed = server.api("GET", JOBS).json().get("jobs", [])
    assert all(j["jobId"] != body.get("jobId") for j in listed)


@pytest.mark.parametrize("member", ["../escape.py", "/etc/evil.py"])
def test_package_with_escaping_paths_is_refused(server: ServerProcess, tmp_path: Path, member: str) -> None:
    archive = _evil_archive(tmp_path, member)
    response = server.api("POST", JOBS, json=job_body("evil_pkg", archive))
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "trainingInput.packageUris[0]" in message and member.strip("/").split("/")[-1] in message
    assert server.api("GET", f"{JOBS}/evil_pkg").status_code == 404
    upload = server.api("POST", "/v1/projects/mlengine/packages:upload",
                        params={"filename": "evil-0.1.tar.gz"}, content=archive.read_bytes())
    assert upload.status_code == 400, upload.text


def test_duplicate_and_unknown_and_malformed(server: ServerProcess, echo_package: Path) -> None:
    assert server.api("POST", JOBS, json=job_body("dup_job", echo_package)).status_code == 200
    again = server.api("POST", JOBS, json=job_body("dup_job", echo_package))
    assert again.status_code == 409
    assert again.json()["error"]["status"] == "ALREADY_EXISTS" and "dup_job" in again.json()["error"]["message"]
    missing = server.api("GET", f"{JOBS}/never_was")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert server.api("POST", f"{JOBS}/never_was:cancel", json={}).status_code == 404
    garbage = server.api("POST", JOBS, content=b"{not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400 and "JSON" in garbage.json()["error"]["message"]
    server.wait_state("dup_job", ("SUCCEEDED", "FAILED"))
    terminal = server.api("POST", f"{JOBS}/dup_job:cancel", json={})
    assert terminal.status_code == 400  # as AI Platform answers:
    assert terminal.json()["error"] == {"code": 400, "status": "FAILED_PRECONDITION",
                                        "message": "Cannot cancel an already completed job."}


def test_upload_then_submit(server: ServerProcess, echo_package: Path) -> None:
    upload = server.api("POST", "/v1/projects/mlengine/packages:upload",
                        params={"filename": echo_package.name}, content=echo_package.read_bytes())
    assert upload.status_code == 200, upload.text
    uri = upload.json()["uri"]
    assert uri.startswith("file://")
    body = job_body("from_upload", echo_package)
    body["trainingInput"]["packageUris"] = [uri]
    assert server.api("POST", JOBS, json=body).status_code == 200
    assert server.wait_state("from_upload", ("SUCCEEDED", "FAILED"))["state"] == "SUCCEEDED"


def test_extension_routes_refuse_bad_input(server: ServerProcess, echo_package: Path) -> None:
    bad_name = server.api("POST", "/v1/projects/mlengine/packages:upload",
                          params={"filename": "../evil.tar.gz"}, content=echo_package.read_bytes())
    assert bad_name.status_code == 400 and "filename" in bad_name.json()["error"]["message"]
    not_archive = server.api("POST", "/v1/projects/mlengine/packages:upload",
                             params={"filename": "notes.txt"}, content=b"hello")
    assert not_archive.status_code == 400 and "notes.txt" in not_archive.json()["error"]["message"]
    assert server.api("POST", JOBS, json=job_body("logs_input", echo_package)).status_code == 200
    bad_token = server.api("GET", f"{JOBS}/logs_input/logs", params={"pageToken": "not-a-cursor"})
    assert bad_token.status_code == 400 and "pageToken" in bad_token.json()["error"]["message"]
    bad_size = server.api("GET", f"{JOBS}/logs_input/logs", params={"pageSize": -1})
    assert bad_size.status_code == 400 and "pageSize" in bad_size.json()["error"]["message"]
    missing = server.api("GET", f"{JOBS}/never_was/logs")
    assert missing.status_code == 404
    no_name = server.api("POST", "/v1/tokens", json={"role": "viewer"})
    assert no_name.status_code == 400 and "name" in no_name.json()["error"]["message"]
    assert server.api("DELETE", "/v1/tokens/nobody").status_code == 404
