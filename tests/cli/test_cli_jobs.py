"""`mle jobs list|describe|cancel|update|stream-logs` and `mle auth` against a fake server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml
from click.testing import Result
from mle_fake_api import FakeMLServer

Run = Callable[..., Result]


def test_list_table_follows_pages(mle: Run, fake: FakeMLServer) -> None:
    for i in range(3):
        fake.add_job(f"job_{i}", state="RUNNING")
    result = mle("jobs", "list", "--page-size", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB_ID", "STATUS", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == ["job_2", "job_1", "job_0"]
    assert lines[1].split()[2] == "2026-01-01T00:00:02Z"
    assert [r.query.get("pageToken") for r in fake.requests] == [None, "2"]
    assert fake.requests[0].path == "/v1/projects/proj/jobs"


def test_list_json_limit_and_filter(mle: Run, fake: FakeMLServer) -> None:
    for i in range(4):
        fake.add_job(f"job_{i}", state="FAILED")
    result = mle("jobs", "list", "--filter", "state=FAILED", "--limit", "2", "--format", "json",
                 "--project", "other")
    assert result.exit_code == 0, result.output
    assert [j["jobId"] for j in json.loads(result.stdout)] == ["job_3", "job_2"]
    assert fake.requests[0].path == "/v1/projects/other/jobs"
    assert fake.requests[0].query["filter"] == "state=FAILED"


def test_list_empty(mle: Run) -> None:
    result = mle("jobs", "list")
    assert result.exit_code == 0 and result.stdout == "" and "Listed 0 items." in result.stderr


def test_describe_yaml_and_json(mle: Run, fake: FakeMLServer) -> None:
    fake.add_job("j1", trainingInput={"pythonModule": "trainer.task"})
    result = mle("jobs", "describe", "j1")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["trainingInput"] == {"pythonModule": "trainer.task"}
    assert json.loads(mle("jobs", "describe", "j1", "--format", "json").stdout)["jobId"] == "j1"


def test_errors_look_like_gcloud(mle: Run) -> None:
    result = mle("jobs", "describe", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "ERROR: (mle.jobs.describe) Job projects/proj/jobs/nope not found."
    assert "Traceback" not in result.output


def test_no_server_is_a_clear_error(mle: Run, tmp_path: Path) -> None:
    result = mle("jobs", "list", env={"MLE_API_URL": "", "MLE_HOME": str(tmp_path / "empty")})
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "ERROR: (mle.jobs.list) No mlengine server found: run `mle server start` or set MLE_API_URL")


def test_unreachable_server(mle: Run) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mle("jobs", "cancel", "j", env={"MLE_API_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 1
    assert result.stderr.startswith("ERROR: (mle.jobs.cancel) Cannot reach the mlengine server")


def test_cancel(mle: Run, fake: FakeMLServer) -> None:
    fake.add_job("j1", state="RUNNING")
    result = mle("jobs", "cancel", "j1")
    assert result.exit_code == 0 and "Cancelled job [j1]." in result.stderr
    assert fake.jobs["j1"]["state"] == "CANCELLED"


def test_update_labels_read_modify_write(mle: Run, fake: FakeMLServer) -> None:
    fake.add_job("j1", labels={"a": "1", "b": "2"})
    fake.etag_conflicts = 1  # someone else changes the job once: the update is retried
    result = mle("jobs", "update", "j1", "--update-labels", "c=3,a=9", "--remove-labels", "b")
    assert result.exit_code == 0, result.output
    assert fake.jobs["j1"]["labels"] == {"a": "9", "c": "3"}
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 2 and all(r.json()["etag"] for r in patches)
    assert mle("jobs", "update", "j1", "--clear-labels").exit_code == 0
    assert fake.jobs["j1"]["labels"] == {}
    assert mle("jobs", "update", "j1").exit_code == 2
    assert mle("jobs", "update", "j1", "--update-labels", "novalue").exit_code == 2


def test_stream_logs_until_success(mle: Run, fake: FakeMLServer) -> None:
    fake.add_job("j1")
    entry = {"timestamp": "2026-01-01T00:00:01Z", "severity": "INFO", "taskName": "master-replica-0"}
    fake.script["j1"] = [
        ("QUEUED", [], {"jobPosition": "3"}),
        ("RUNNING", [{**entry, "message": "epoch 1"}], {}),
        ("SUCCEEDED", [{**entry, "message": "done"}], {}),
    ]
    result = mle("jobs", "stream-logs", "j1", "--polling-interval", "0.1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2026-01-01T00:00:01Z INFO master-replica-0 epoch 1",
        "2026-01-01T00:00:01Z INFO master-replica-0 done",
    ]
    assert "Job is queued (position 3)." in result.stderr


def test_stream_logs_fails_when_the_job_fails(mle: Run, fake: FakeMLServer) -> None:
    fake.add_job("j1")
    fake.script["j1"] = [("FAILED", [], {"errorMessage": "The replica master 0 exited with code 1"})]
    result = mle("jobs", "stream-logs", "j1", "--task-name", "master-replica-0")
    assert result.exit_code == 1
    assert ("ERROR: (mle.jobs.stream-logs) Job [j1] ended in state FAILED: "
            "The replica master 0 exited with code 1") in result.stderr
    assert fake.requests[-1].query["taskName"] == "master-replica-0"


def test_auth_commands(mle: Run, fake: FakeMLServer, home: Path) -> None:
    created = mle("auth", "create-token", "ci", "--role", "editor")
    assert created.exit_code == 0 and created.stdout == "secret-ci\n"
    assert fake.tokens == {"ci": "editor"}
    listed = mle("auth", "list-tokens")
    assert listed.stdout.splitlines()[1].split() == ["ci", "editor", "2026-01-01T00:00:00Z"]
    assert mle("auth", "revoke-token", "ci").exit_code == 0 and fake.tokens == {}
    missing = mle("auth", "revoke-token", "ci")
    assert missing.exit_code == 1 and "ERROR: (mle.auth.revoke-token) Token ci not found." in missing.stderr
    assert mle("auth", "create-token", "x", "--role", "root").exit_code == 2


def test_print_access_token(mle: Run, home: Path) -> None:
    (home / "admin_token").write_text("the-admin-token\n")
    result = mle("auth", "print-access-token", env={"MLE_TOKEN": ""})
    assert result.stdout == "the-admin-token\n"
    assert mle("auth", "print-access-token").stdout == "test-token\n"
