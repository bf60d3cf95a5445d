"""`mle jobs list|describe|cancel|update|stream-logs` and `mle auth` against the real control
plane running in process, with real (small) jobs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import Result
from tests.inprocess import job_body, wait_for_job

from mlengine.cli.streaming import _progress_text
from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer

Run = Callable[..., Result]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


def run_jobs(client: Client, project: str, package: Path, ids: list[str], *args: str) -> list[dict]:
    """Submit one real job per id and wait until all have ended."""
    for job_id in ids:
        client.create_job(project, job_body(job_id, package, *args))
    return [wait_for_job(client, project, job_id) for job_id in ids]


def test_list_table_follows_pages(mle: Run, server: InProcessServer, client: Client, project: str,
                                  trainer_package: Path) -> None:
    jobs = run_jobs(client, project, trainer_package, ["job_0", "job_1", "job_2"])
    server.clear_requests()
    result = mle("jobs", "list", "--page-size", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB_ID", "STATUS", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [[j, "SUCCEEDED"] for j in ("job_2", "job_1", "job_0")]
    assert lines[1].split()[2] == jobs[2]["createTime"].split(".")[0].rstrip("Z") + "Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[1].split()[2])
    lists = [r for r in server.requests if r.url.path == f"/v1/projects/{project}/jobs"]
    assert len(lists) == 2 and [r.url.params.get("pageSize") for r in lists] == ["2", "2"]
    assert "pageToken" not in lists[0].url.params and lists[1].url.params["pageToken"]


def test_list_json_limit_and_filter(mle: Run, server: InProcessServer, client: Client, project: str,
                                    trainer_package: Path) -> None:
    other = project + "-other"
    run_jobs(client, other, trainer_package, ["job_0", "job_1", "job_2", "job_3"], "--exit-code", "2")
    run_jobs(client, other, trainer_package, ["ok"])
    server.clear_requests()
    result = mle("jobs", "list", "--filter", "state=FAILED", "--limit", "2", "--format", "json",
                 "--project", other)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [j["jobId"] for j in listed] == ["job_3", "job_2"]
    assert {j["state"] for j in listed} == {"FAILED"}
    assert server.requests[0].url.path == f"/v1/projects/{other}/jobs"
    assert server.requests[0].url.params["filter"] == "state=FAILED"


def test_list_empty(mle: Run) -> None:
    result = mle("jobs", "list")
    assert result.exit_code == 0 and result.stdout == "" and "Listed 0 items." in result.stderr


def test_describe_yaml_and_json(mle: Run, client: Client, project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("j1", trainer_package, "--lines", "hi"))
    wait_for_job(client, project, "j1")
    result = mle("jobs", "describe", "j1")
    assert result.exit_code == 0, result.output
    described = yaml.safe_load(result.stdout)
    assert described["trainingInput"]["pythonModule"] == "trainer.task"
    assert described["trainingInput"]["packageUris"] == [str(trainer_package)]
    assert described["state"] == "SUCCEEDED"
    assert json.loads(mle("jobs", "describe", "j1", "--format", "json").stdout) == client.get_job(project, "j1")


def test_errors_look_like_gcloud(mle: Run, project: str) -> None:
    result = mle("jobs", "describe", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"ERROR: (mle.jobs.describe) Job projects/{project}/jobs/nope not found."
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


def test_cancel(mle: Run, client: Client, project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("j1", trainer_package, "--sleep", "60"))
    wait_for_job(client, project, "j1", ("RUNNING",))
    result = mle("jobs", "cancel", "j1")
    assert result.exit_code == 0 and "Cancelled job [j1]." in result.stderr
    assert wait_for_job(client, project, "j1")["state"] == "CANCELLED"
    again = mle("jobs", "cancel", "j1")
    assert again.exit_code == 1
    assert again.stderr == "ERROR: (mle.jobs.cancel) Cannot cancel an already completed job.\n"


def test_update_labels_read_modify_write(mle: Run, server: InProcessServer, client: Client, project: str,
                                         trainer_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client.create_job(project, {**job_body("j1", trainer_package), "labels": {"a": "1", "b": "2"}})
    wait_for_job(client, project, "j1")
    # Someone else changes the labels between the command's read and its write, once: the
    # server refuses the write (etag), the command reads again and keeps the other change.
    from mlengine.testing import inprocess

    handle = inprocess.InProcessTransport.handle_request
    interfered: list[str] = []

    def concurrent_writer(self: inprocess.InProcessTransport, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and not interfered:
            interfered.append("")  # the other writer's own PATCH passes through here too
            interfered[0] = client.patch_job_labels(project, "j1", {"a": "1", "b": "2", "x": "y"})["etag"]
        return handle(self, request)

    monkeypatch.setattr(inprocess.InProcessTransport, "handle_request", concurrent_writer)
    server.clear_requests()
    result = mle("jobs", "update", "j1", "--update-labels", "c=3,a=9", "--remove-labels", "b")
    assert result.exit_code == 0, result.output
    assert client.get_job(project, "j1")["labels"] == {"a": "9", "c": "3", "x": "y"}
    patches = [json.loads(r.content) for r in server.requests if r.method == "PATCH"]
    cli_patches = [p for p in patches if p.get("labels") != {"a": "1", "b": "2", "x": "y"}]
    assert len(cli_patches) == 2 and all(p["etag"] for p in cli_patches)
    assert cli_patches[0]["etag"] != cli_patches[1]["etag"] == interfered[0]
    monkeypatch.undo()
    assert mle("jobs", "update", "j1", "--clear-labels").exit_code == 0
    assert client.get_job(project, "j1")["labels"] == {}
    assert mle("jobs", "update", "j1").exit_code == 2
    assert mle("jobs", "update", "j1", "--update-labels", "novalue").exit_code == 2


def test_stream_logs_until_success(mle: Run, client: Client, project: str, trainer_package: Path) -> None:
    # One capacity slot: while "first" runs, j1 waits in the queue at position 1.
    client.create_job(project, job_body("first", trainer_package, "--sleep", "1.5"))
    wait_for_job(client, project, "first", ("RUNNING",))
    client.create_job(project, job_body("j1", trainer_package, "--lines", "epoch 1,done"))
    result = mle("jobs", "stream-logs", "j1", "--polling-interval", "0.1")
    assert result.exit_code == 0, result.output
    trainer_lines = [line for line in result.stdout.splitlines() if " master-replica-0 " in line]
    assert len(trainer_lines) == 2
    assert re.fullmatch(TIMESTAMP + " INFO master-replica-0 epoch 1", trainer_lines[0])
    assert re.fullmatch(TIMESTAMP + " INFO master-replica-0 done", trainer_lines[1])
    assert "INFO service Job completed successfully." in result.stdout
    assert "Job is queued (position 1)." in result.stderr
    assert wait_for_job(client, project, "first")["state"] == "SUCCEEDED"


def test_progress_texts() -> None:
    assert _progress_text({"state": "QUEUED", "jobPosition": "3"}) == "Job is queued (position 3)."
    assert _progress_text({"state": "QUEUED"}) == "Job is queued."
    assert _progress_text({"state": "PREPARING"}) == "Job is being prepared (installing packages)..."
    assert _progress_text({"state": "RUNNING"}) is None


def test_stream_logs_fails_when_the_job_fails(mle: Run, server: InProcessServer, client: Client,
                                              project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("j1", trainer_package, "--lines", "about to fail", "--exit-code", "1"))
    server.clear_requests()
    result = mle("jobs", "stream-logs", "j1", "--task-name", "master-replica-0", "--polling-interval", "0.1")
    assert result.exit_code == 1
    assert ("ERROR: (mle.jobs.stream-logs) Job [j1] ended in state FAILED: The replica master-replica-0 "
            "exited with a non-zero status of 1.") in result.stderr
    assert "trainer failing on purpose" in result.stderr
    assert [line.split(" ", 2)[1:] for line in result.stdout.splitlines()] == [
        ["INFO", "master-replica-0 about to fail"], ["ERROR", "master-replica-0 trainer failing on purpose"]]
    logs = [r for r in server.requests if r.url.path.endswith("/jobs/j1/logs")]
    assert logs and all(r.url.params["taskName"] == "master-replica-0" for r in logs)


def test_auth_commands(mle: Run, server: InProcessServer) -> None:
    created = mle("auth", "create-token", "ci", "--role", "editor")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n" and secret
    with server.client(token=secret, retries=0) as ci:
        assert ci.server_info()["executor"] == "local"  # the printed token works
    listed = mle("auth", "list-tokens")
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "PRINCIPAL", "GROUPS", "SERVER_ROLES", "CREATED"]
    ci_row = next(row for row in rows if row[0] == "ci")
    assert ci_row[1:3] == ["user:ci", "roles/ml.developer"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ci_row[3])
    as_json = json.loads(mle("auth", "list-tokens", "--format", "json").stdout)
    assert next(t for t in as_json if t["name"] == "ci")["role"] == "editor"
    assert mle("auth", "revoke-token", "ci").exit_code == 0
    with server.client(token=secret, retries=0) as ci:
        try:
            ci.server_info()
            raise AssertionError("a revoked token still works")
        except MLEngineError as err:
            assert err.code is Code.UNAUTHENTICATED
    missing = mle("auth", "revoke-token", "ci")
    assert missing.exit_code == 1 and "ERROR: (mle.auth.revoke-token) Token 'ci' not found." in missing.stderr
    assert mle("auth", "create-token", "x", "--role", "root").exit_code == 2


def test_print_access_token(mle: Run, server: InProcessServer, home: Path) -> None:
    (home / "admin_token").write_text("the-admin-token\n")
    result = mle("auth", "print-access-token", env={"MLE_TOKEN": ""})
    assert result.stdout == "the-admin-token\n"
    assert mle("auth", "print-access-token").stdout == server.token + "\n"


def test_server_status_of_the_server_named_by_mle_api_url(mle: Run, server: InProcessServer) -> None:
    result = mle("server", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["running"] is True and info["url"] == server.url
    assert info["executor"] == "local" and info["home"] == str(server.settings.home)
