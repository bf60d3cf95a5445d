"""Issue 9 item 7: DNS rebinding and cross-site requests are refused on state-changing routes
of a real server, predictions included; the CLI, SDK and same-origin pages still work."""

from __future__ import annotations

import pytest
from tests.e2e.helpers import ServerProcess

pytestmark = pytest.mark.e2e

JOB = {"jobId": "x", "trainingInput": {"pythonModule": "m", "packageUris": ["/nope.tar.gz"]}}


def port(server: ServerProcess) -> str:
    return server.url.rsplit(":", 1)[1]


@pytest.mark.parametrize(("headers", "needle"), [
    ({"Host": "evil.example"}, "does not name this server"),
    ({"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, "does not name this server"),
    ({"Origin": "http://evil.example"}, "web page at http://evil.example"),
    ({"Origin": "null"}, "opaque origin"),
])
def test_rebinding_and_cross_site_writes_are_refused(server: ServerProcess, headers: dict, needle: str) -> None:
    for method, path in (("POST", "/v1/projects/mlengine/jobs"), ("POST", "/v1/projects/mlengine/models/m:predict"),
                         ("DELETE", "/v1/tokens/someone"), ("POST", "/v1/projects/mlengine/jobs/x:cancel")):
        response = server.api(method, path, json=JOB, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert needle in response.json()["error"]["message"]


def test_own_names_and_reads_still_work(server: ServerProcess) -> None:
    same_origin = {"Origin": server.url, "Host": f"localhost:{port(server)}"}
    response = server.api("POST", "/v1/projects/mlengine/jobs", json=JOB, headers=same_origin)
    assert response.status_code == 400 and "packageUris" in response.text  # reached validation
    assert server.api("GET", "/v1/projects/mlengine/jobs", headers={"Host": "evil.example"}).status_code == 200


def test_configured_names(server_factory) -> None:
    server = server_factory(MLE_ALLOWED_HOSTS="ml.example.org")
    ok = server.api("POST", "/v1/projects/mlengine/jobs", json=JOB, headers={"Host": "ml.example.org"})
    assert ok.status_code == 400  # past the guard, refused by validation
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=JOB).status_code == 400  # 127.0.0.1: loopback
    refused = server.api("POST", "/v1/projects/mlengine/jobs", json=JOB, headers={"Host": "other.example"})
    assert refused.status_code == 403
