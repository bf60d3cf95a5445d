"""Issue 13.4 on one real server (``MLE_LOG_FORMAT=json``, ``MLE_METRICS_PORT``): /healthz and
/readyz answer without a token, /metrics needs one (and a role holding mlengine.metrics.get),
its prediction counter moves after a predict call, the extra port serves it without a token,
and the server log is JSON lines carrying the request id the client sent."""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.helpers import ServerProcess
from tests.e2e.serving_helpers import deploy, predict, write_sklearn_model

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    home = Path(tempfile.mkdtemp(prefix="mle-health-", dir="/tmp"))
    port = _free_port()
    proc = ServerProcess(home, {"MLE_LOG_FORMAT": "json", "MLE_METRICS_PORT": str(port)})
    proc.metrics_port = port  # type: ignore[attr-defined]
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels...}`` in a Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_probes_need_no_token(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        live = anonymous.get("/healthz")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "scheduler": "ok"}
        # The Host guard still applies to what could change state.
        refused = anonymous.post("/healthz", headers={"Host": "evil.example"})
        assert refused.status_code == 403
        assert anonymous.get("/metrics").status_code == 401


def test_metrics_need_the_permission(server: ServerProcess) -> None:
    created = server.api("POST", "/v1/tokens", json={"name": "watcher", "role": "viewer"})
    assert created.status_code == 200, created.text
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": f"Bearer {created.json()['token']}"}) as viewer:
        denied = viewer.get("/metrics")
    assert denied.status_code == 403 and "mlengine.metrics.get" in denied.json()["error"]["message"]
    admin = server.api("GET", "/metrics")
    assert admin.status_code == 200 and admin.headers["content-type"].startswith("text/plain")
    assert "# TYPE mlengine_prediction_requests_total counter" in admin.text


def test_prediction_counter_moves(server: ServerProcess, tmp_path: Path) -> None:
    deploy(server, "health", "v1", write_sklearn_model(tmp_path / "model"))
    labels = {"project": "mlengine", "model": "health", "version": "v1"}
    before = server.api("GET", "/metrics").text
    assert _sample(before, "mlengine_prediction_requests_total", code="200", **labels) == 0
    answer = predict(server, "health", {"instances": [[0.1, 0.2, 0.3]]}, headers={"X-Request-Id": "req-health-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "req-health-1"
    assert predict(server, "health", {"instances": "not a list"}).status_code == 400
    after = server.api("GET", "/metrics").text
    assert _sample(after, "mlengine_prediction_requests_total", code="200", **labels) == 1
    assert _sample(after, "mlengine_prediction_requests_total", code="400", **labels) == 1
    assert _sample(after, "mlengine_prediction_errors_total", **labels) == 1
    assert _sample(after, "mlengine_prediction_latency_seconds_count", **labels) == 2
    assert _sample(after, "mlengine_version_replicas", state="ready", **labels) >= 1
    # The first call found no replica (minNodes 0 scales to zero) or one already up: never more.
    assert _sample(after, "mlengine_scale_from_zero_total", **labels) <= 1

    with httpx.Client(timeout=10) as anonymous:  # MLE_METRICS_PORT: the same, no token
        scraped = anonymous.get(f"http://127.0.0.1:{server.metrics_port}/metrics")  # type: ignore[attr-defined]
    assert scraped.status_code == 200
    assert _sample(scraped.text, "mlengine_prediction_requests_total", code="200", **labels) == 1


def test_jobs_by_state_and_json_log(server: ServerProcess) -> None:
    listed = server.api("GET", "/v1/projects/mlengine/jobs", headers={"X-Request-Id": "req-list-7"})
    assert listed.status_code == 200 and listed.headers["x-request-id"] == "req-list-7"
    generated = server.api("GET", "/v1/server").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    text = server.api("GET", "/metrics").text
    assert "# TYPE mlengine_jobs gauge" in text
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in (server.home / "server-test.log").read_text().splitlines()
                 if line.startswith("{")]
        access = [r for r in lines if r.get("requestId") == "req-list-7" and r["logger"] == "mlengine.access"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert access and access[0]["path"] == "/v1/projects/mlengine/jobs" and access[0]["status"] == 200
    assert {"time", "level", "message"} <= set(access[0])
    assert any(r.get("logger") == "mlengine.server" and "listening" in r["message"] for r in lines)
