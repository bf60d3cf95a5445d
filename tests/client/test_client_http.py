"""The HTTP client against a real (small) HTTP server: errors, pagination, uploads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from mle_fake_api import TOKEN, FakeAPI, FakeMLServer, Request, google_error

from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError


def client_for(server: FakeAPI, token: str = TOKEN) -> Client:
    return Client(server.url, token, retries=0)


def test_google_error_is_rebuilt(fake: FakeMLServer) -> None:
    with client_for(fake) as c, pytest.raises(MLEngineError) as info:
        c.get_job("p", "missing")
    assert info.value.code is Code.NOT_FOUND
    assert info.value.message == "Job projects/p/jobs/missing not found."


def test_status_name_wins_over_http_code(api: FakeAPI) -> None:
    api.route("POST", "/v1/projects/p/jobs")(lambda r: google_error(400, "FAILED_PRECONDITION", "nope"))
    api.route("GET", "/v1/projects/p/jobs/a")(lambda r: (409, {"error": {"code": 409, "message": "x"}}))
    api.route("GET", "/v1/projects/p/jobs/b")(lambda r: (500, b"Internal Server Error"))
    api.route("GET", "/v1/projects/p/jobs/c")(lambda r: (400, {"error": "bad instances"}))
    with client_for(api) as c:
        with pytest.raises(MLEngineError) as info:
            c.create_job("p", {"jobId": "x"})
        assert (info.value.code, info.value.message) == (Code.FAILED_PRECONDITION, "nope")
        with pytest.raises(MLEngineError) as info:
            c.get_job("p", "a")
        assert info.value.code is Code.ABORTED
        with pytest.raises(MLEngineError) as info:
            c.get_job("p", "b")
        assert info.value.code is Code.INTERNAL
        assert "HTTP 500" in info.value.message and "Internal Server Error" in info.value.message
        with pytest.raises(MLEngineError) as info:
            c.get_job("p", "c")
        assert (info.value.code, info.value.message) == (Code.INVALID_ARGUMENT, "bad instances")


def test_bearer_token_is_sent(fake: FakeMLServer) -> None:
    with client_for(fake, token="wrong") as c, pytest.raises(MLEngineError) as info:
        c.server_info()
    assert info.value.code is Code.UNAUTHENTICATED
    with client_for(fake) as c:
        assert c.server_info()["executor"] == "local"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_list_jobs_follows_pages(fake: FakeMLServer) -> None:
    for i in range(5):
        fake.add_job(f"job_{i}", state="RUNNING" if i % 2 else "QUEUED")
    with client_for(fake) as c:
        ids = [j["jobId"] for j in c.list_jobs("p", page_size=2)]
        assert ids == ["job_4", "job_3", "job_2", "job_1", "job_0"]
        lists = [r for r in fake.requests if r.path == "/v1/projects/p/jobs"]
        assert [r.query.get("pageToken") for r in lists] == [None, "2", "4"]
        assert all(r.query["pageSize"] == "2" for r in lists)
        running = [j["jobId"] for j in c.list_jobs("p", filter="state=RUNNING")]
        assert running == ["job_3", "job_1"]
        assert fake.requests[-1].query["filter"] == "state=RUNNING"


def test_list_jobs_refuses_a_looping_token(api: FakeAPI) -> None:
    api.route("GET", "/v1/projects/p/jobs")(lambda r: (200, {"jobs": [{}], "nextPageToken": "same"}))
    with client_for(api) as c, pytest.raises(MLEngineError, match="same page token"):
        list(c.list_jobs("p"))


def test_job_calls(fake: FakeMLServer) -> None:
    with client_for(fake) as c:
        created = c.create_job("p", {"jobId": "j1", "trainingInput": {"pythonModule": "m"}})
        assert created["state"] == "QUEUED"
        assert c.get_job("p", "j1")["jobId"] == "j1"
        patched = c.patch_job_labels("p", "j1", {"team": "ml"}, etag="e0")
        assert patched["labels"] == {"team": "ml"}
        req = fake.requests[-1]
        assert (req.method, req.query, req.json()) == (
            "PATCH", {"updateMask": "labels"}, {"labels": {"team": "ml"}, "etag": "e0"})
        with pytest.raises(MLEngineError) as info:
            c.patch_job_labels("p", "j1", {"team": "x"}, etag="stale")
        assert info.value.code is Code.ABORTED
        assert c.cancel_job("p", "j1") == {}
        assert fake.requests[-1].path == "/v1/projects/p/jobs/j1:cancel"
        assert fake.requests[-1].json() == {}


def test_read_logs(fake: FakeMLServer) -> None:
    fake.add_job("j1", state="RUNNING")
    fake.logs["j1"] = [{"timestamp": "t", "severity": "INFO", "taskName": "master-replica-0",
                        "message": f"line {i}"} for i in range(3)]
    with client_for(fake) as c:
        entries, token = c.read_logs("p", "j1", task_name="master-replica-0")
        assert [e["message"] for e in entries] == ["line 0", "line 1", "line 2"]
        assert fake.requests[-1].query == {"taskName": "master-replica-0"}
        entries, token2 = c.read_logs("p", "j1", page_token=token)
        assert entries == [] and token2 == "3"


def test_upload_package(fake: FakeMLServer, tmp_path: Path) -> None:
    pkg = tmp_path / "trainer-0.1.tar.gz"
    pkg.write_bytes(b"not really a tarball" * 1000)
    with client_for(fake) as c:
        uri = c.upload_package("p", pkg)
    digest = hashlib.sha256(pkg.read_bytes()).hexdigest()
    assert uri == f"file:///srv/staging/{digest}/trainer-0.1.tar.gz"
    req = fake.requests[-1]
    assert req.query == {"filename": "trainer-0.1.tar.gz"}
    assert req.headers["content-type"] == "application/octet-stream"
    assert fake.uploads["trainer-0.1.tar.gz"] == pkg.read_bytes()


def test_tokens(fake: FakeMLServer) -> None:
    with client_for(fake) as c:
        assert c.create_token("ci", "editor")["token"] == "secret-ci"
        assert [t["name"] for t in c.list_tokens()] == ["ci"]
        c.delete_token("ci")
        assert c.list_tokens() == []
        with pytest.raises(MLEngineError) as info:
            c.delete_token("ci")
        assert info.value.code is Code.NOT_FOUND


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


def test_request_records_are_plain(api: FakeAPI) -> None:
    api.route("GET", "/v1/server")(lambda r: (200, {"ok": True, "path": r.path}))
    with client_for(api) as c:
        assert c.server_info() == {"ok": True, "path": "/v1/server"}
    assert isinstance(api.requests[0], Request)
