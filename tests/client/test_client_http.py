"""The HTTP client against the real control plane (in process): errors, pagination, uploads,
tokens; plus what it does with answers and failures the real server never produces
(``httpx.MockTransport``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from tests.inprocess import job_body, wait_for_job

from mlengine.client.http import Client, error_from_response
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer


def test_google_error_is_rebuilt(client: Client, project: str) -> None:
    with pytest.raises(MLEngineError) as info:
        client.get_job(project, "missing")
    assert info.value.code is Code.NOT_FOUND
    assert info.value.message == f"Job projects/{project}/jobs/missing not found."


def test_status_name_wins_over_http_code(client: Client, project: str, trainer_package: Path) -> None:
    # FAILED_PRECONDITION travels as HTTP 400, which alone would read as INVALID_ARGUMENT.
    with pytest.raises(MLEngineError) as info:
        client.delete_token("admin")
    assert (info.value.code, info.value.message) == (Code.FAILED_PRECONDITION, "A token cannot revoke itself")
    client.create_job(project, job_body("done", trainer_package))
    assert wait_for_job(client, project, "done")["state"] == "SUCCEEDED"
    with pytest.raises(MLEngineError) as info:
        client.cancel_job(project, "done")
    assert info.value.code is Code.FAILED_PRECONDITION
    assert info.value.message == "Cannot cancel an already completed job."


def test_prediction_errors_are_rebuilt(client: Client, project: str) -> None:
    # Prediction errors are {"error": "message"}: the code comes from the HTTP status.
    with pytest.raises(MLEngineError) as info:
        client.predict(project, "nope", {"instances": [[1.0]]})
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, f"Model projects/{project}/models/nope not found.")


def test_bad_input_is_invalid_argument(client: Client, project: str) -> None:
    with pytest.raises(MLEngineError) as info:
        client.create_job(project, {"jobId": "x"})
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "a Job needs one of " in info.value.message and "trainingInput" in info.value.message


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (409, {"error": {"code": 409, "message": "x"}}, Code.ABORTED, "x"),  # no status name
        (500, b"Internal Server Error", Code.INTERNAL, "HTTP 500 Internal Server Error: Internal Server Error"),
        (502, b"", Code.INTERNAL, "HTTP 502 Bad Gateway"),  # a proxy in front of the server
        (422, {"detail": "framework default"}, Code.INVALID_ARGUMENT, "framework default"),
        (400, {"error": {"status": "NOT_A_CODE", "message": "odd"}}, Code.INVALID_ARGUMENT, "odd"),
    ],
)
def test_error_bodies_the_server_does_not_send(status: int, body: object, code: Code, message: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.Response(status, content=content, request=httpx.Request("GET", "http://mle.invalid/v1/x"))
    error = error_from_response(response)
    assert (error.code, error.message) == (code, message)


def test_bearer_token_is_sent(server: InProcessServer) -> None:
    with server.client(token="wrong", retries=0) as c, pytest.raises(MLEngineError) as info:
        c.server_info()
    assert info.value.code is Code.UNAUTHENTICATED
    with server.client(retries=0) as c:
        info_ = c.server_info()
    assert info_["executor"] == "local" and info_["home"] == str(server.settings.home)
    assert server.requests[-1].headers["authorization"] == f"Bearer {server.token}"


def test_list_jobs_follows_pages(server: InProcessServer, client: Client, project: str,
                                 trainer_package: Path) -> None:
    for i in range(5):
        client.create_job(project, job_body(f"job_{i}", trainer_package, "--exit-code", str(i % 2)))
    for i in range(5):
        wait_for_job(client, project, f"job_{i}")
    server.clear_requests()
    ids = [j["jobId"] for j in client.list_jobs(project, page_size=2)]
    assert ids == ["job_4", "job_3", "job_2", "job_1", "job_0"]
    lists = [r for r in server.requests if r.url.path == f"/v1/projects/{project}/jobs"]
    tokens = [r.url.params.get("pageToken") for r in lists]
    assert len(lists) == 3 and tokens[0] is None and all(tokens[1:]) and tokens[1] != tokens[2]
    assert all(r.url.params["pageSize"] == "2" for r in lists)
    failed = [j["jobId"] for j in client.list_jobs(project, filter="state=FAILED")]
    assert failed == ["job_3", "job_1"]
    assert server.requests[-1].url.params["filter"] == "state=FAILED"


def test_list_jobs_refuses_a_looping_token() -> None:
    def looping(request: httpx.Request) -> httpx.Response:  # a server bug
        return httpx.Response(200, json={"jobs": [{}], "nextPageToken": "same"})

    with Client("http://mle.invalid", "t", transport=httpx.MockTransport(looping)) as c, \
            pytest.raises(MLEngineError, match="same page token"):
        list(c.list_jobs("p"))


def test_job_calls(server: InProcessServer, client: Client, project: str, trainer_package: Path) -> None:
    created = client.create_job(project, job_body("j1", trainer_package, "--sleep", "60"))
    assert created["state"] == "QUEUED"
    job = client.get_job(project, "j1")
    assert job["jobId"] == "j1" and job["trainingInput"]["args"] == ["--sleep", "60"]
    patched = client.patch_job_labels(project, "j1", {"team": "ml"}, etag=job["etag"])
    assert patched["labels"] == {"team": "ml"} and patched["etag"] != job["etag"]
    req = server.requests[-1]
    assert (req.method, dict(req.url.params), json.loads(req.content)) == (
        "PATCH", {"updateMask": "labels"}, {"labels": {"team": "ml"}, "etag": job["etag"]})
    with pytest.raises(MLEngineError) as info:
        client.patch_job_labels(project, "j1", {"team": "x"}, etag=job["etag"])  # stale now
    assert info.value.code is Code.ABORTED
    assert client.get_job(project, "j1")["labels"] == {"team": "ml"}
    assert client.cancel_job(project, "j1") == {}
    assert server.requests[-1].url.path == f"/v1/projects/{project}/jobs/j1:cancel"
    assert json.loads(server.requests[-1].content) == {}
    assert wait_for_job(client, project, "j1")["state"] == "CANCELLED"


def test_read_logs(server: InProcessServer, client: Client, project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("j1", trainer_package, "--lines", "line 0,line 1,line 2"))
    assert wait_for_job(client, project, "j1")["state"] == "SUCCEEDED"
    entries, token = client.read_logs(project, "j1", task_name="master-replica-0")
    assert [e["message"] for e in entries] == ["line 0", "line 1", "line 2"]
    assert {e["taskName"] for e in entries} == {"master-replica-0"}
    assert dict(server.requests[-1].url.params) == {"taskName": "master-replica-0"}
    entries, token2 = client.read_logs(project, "j1", task_name="master-replica-0", page_token=token)
    assert entries == [] and token2 == token
    everything, _ = client.read_logs(project, "j1")
    assert "service" in {e["taskName"] for e in everything} and len(everything) > 3


def test_upload_package(server: InProcessServer, client: Client, project: str, trainer_package: Path) -> None:
    uri = client.upload_package(project, trainer_package)
    digest = hashlib.sha256(trainer_package.read_bytes()).hexdigest()
    stored = server.settings.staging_dir / digest / trainer_package.name
    assert uri == stored.as_uri()
    assert stored.read_bytes() == trainer_package.read_bytes()
    req = server.requests[-1]
    assert dict(req.url.params) == {"filename": trainer_package.name}
    assert req.headers["content-type"] == "application/octet-stream"


def test_upload_of_a_broken_package_is_refused(client: Client, project: str, tmp_path: Path) -> None:
    broken = tmp_path / "trainer-0.1.tar.gz"
    broken.write_bytes(b"not really a tarball" * 1000)
    with pytest.raises(MLEngineError) as info:
        client.upload_package(project, broken)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "trainer-0.1.tar.gz is not a valid tar archive" in info.value.message


def test_tokens(server: InProcessServer, client: Client) -> None:
    created = client.create_token("ci", "editor")
    assert (created["name"], created["role"]) == ("ci", "editor") and created["token"]
    assert {(t["name"], t["role"]) for t in client.list_tokens()} >= {("ci", "editor"), ("admin", "admin")}
    with server.client(token=created["token"], retries=0) as ci:
        assert ci.server_info()["executor"] == "local"
        with pytest.raises(MLEngineError) as info:
            ci.create_token("other", "admin")  # an editor cannot manage tokens
        assert info.value.code is Code.PERMISSION_DENIED
    client.delete_token("ci")
    assert "ci" not in [t["name"] for t in client.list_tokens()]
    with server.client(token=created["token"], retries=0) as ci, pytest.raises(MLEngineError) as info:
        ci.server_info()
    assert info.value.code is Code.UNAUTHENTICATED
    with pytest.raises(MLEngineError) as info:
        client.delete_token("ci")
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "Token 'ci' not found.")


def test_unreachable_server_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "t", retries=1, backoff=0.01) as c, \
            pytest.raises(MLEngineError) as info:
        c.get_job("p", "j")
    assert info.value.code is Code.UNAVAILABLE
    assert f"127.0.0.1:{port}" in info.value.message and "mle server start" in info.value.message


@pytest.mark.parametrize(("method", "calls"), [("GET", 4), ("POST", 1), ("PATCH", 1)])
def test_only_gets_are_retried(method: str, calls: int) -> None:
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        raise httpx.ConnectError("refused", request=request)

    with Client("http://mle.invalid", "t", retries=3, backoff=0.001,
                transport=httpx.MockTransport(refuse)) as c, pytest.raises(MLEngineError) as info:
        c.request(method, "/v1/x")
    assert info.value.code is Code.UNAVAILABLE
    assert seen == [method] * calls


def test_broken_connection_after_sending_a_post_says_so() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    with Client("http://mle.invalid", "t", transport=httpx.MockTransport(broken)) as c, \
            pytest.raises(MLEngineError, match="may or may not have been applied"):
        c.create_job("p", {"jobId": "j"})


def test_transient_get_failure_is_retried() -> None:
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"jobId": "j", "state": "RUNNING"})

    with Client("http://mle.invalid", "t", backoff=0.001, transport=httpx.MockTransport(flaky)) as c:
        assert c.get_job("p", "j")["state"] == "RUNNING"
    assert len(attempts) == 3
