"""The monitoring service over a real SQLite store: a version's monitoringConfig runs on its
schedule (the server's background pass), the window runs from the last run's end, alerts are
posted to a real webhook receiver (no redirect followed), and the console's JSON is there."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.monitoring.conftest import DATA

from mlengine.config import load_settings
from mlengine.monitoring import logs, runs
from mlengine.monitoring.alerts import send_webhook
from mlengine.monitoring.service import MonitoringService
from mlengine.store.database import open_database
from mlengine.store.serving import ServingRepository


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    redirect = False

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.redirect:
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()
            return
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received, Receiver.redirect = [], False
    httpd = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                         uri_allow_private_networks=True, monitoring_webhook_allow_http=True)


def test_scheduled_runs_alert_to_the_webhook(tmp_path: Path, settings: Any, receiver: str) -> None:
    db = open_database(settings.resolved_database_url)
    repo = ServingRepository(db)
    model = repo.create_model("p", "fares", description="", labels={}, spec={})
    spec = {"name": "v1", "deploymentUri": str(tmp_path), "requestLoggingConfig": {"samplingPercentage": 1.0},
            "trainingData": {"uri": str(DATA)},
            "monitoringConfig": {"interval": "60s", "alertWebhook": receiver, "binning": "QUANTILE", "buckets": 20}}
    row, _ = repo.create_version(model, "v1", spec=spec, internal={"features": ["trip_miles", "payment_type"]})
    row = repo.update_version(row.id, lambda v: setattr(v, "state", "READY"))
    service = MonitoringService(settings, db, lambda m, v: tmp_path / "versions" / v.name)
    try:
        pool = type("Pool", (), {"observe": None})()
        service.attach(model, row, pool)
        created = row.create_time.timestamp() if row.create_time.tzinfo else \
            row.create_time.replace(tzinfo=__import__("datetime").timezone.utc).timestamp()
        for i in range(150):
            body = json.dumps({"instances": [{"trip_miles": 40.0 + i, "payment_type": "Cash"}]}).encode()
            pool.observe(body, (200, b'{"predictions": [1]}', []))
        service.pass_once(now=created + 30)  # not due yet; the baseline is computed meanwhile
        directory = tmp_path / "versions" / "v1"
        assert runs.run_ids(directory) == []
        assert service.describe("p", "fares", "v1")["baseline"]["state"] == "READY"

        service.pass_once(now=created + 3600)
        (run_id,) = runs.run_ids(directory)
        record = runs.load(directory, run_id)
        assert record["window"]["start"] == pytest.approx(created) and record["rows"] == 150
        assert record["alerts"] == ["payment_type", "trip_miles"] and record["webhook"]["status"] == 204
        (posted,) = Receiver.received
        assert posted["version"] == "projects/p/models/fares/versions/v1"
        assert posted["alerts"] == ["payment_type", "trip_miles"]
        assert {f["feature"]: f["sampleSize"] for f in posted["skew"]} == {"payment_type": 150, "trip_miles": 150}

        service.pass_once(now=created + 3630)  # the next window is not due before another interval
        assert len(runs.run_ids(directory)) == 1
        listed = service.list_runs("p", "fares", "v1", 1, None)
        assert listed["monitoringRuns"][0]["name"].endswith("/monitoringRuns/" + run_id)
        console = service.histograms("p", "fares", "v1")
        assert sum(console["histograms"]["trip_miles"]["serving"][-3:]) > 0.9  # nearly all in the top buckets
        assert console["timeline"]["trip_miles"][0]["alert"] is True
        assert logs.query(directory, "SELECT count(*) FROM logs")["rows"] == [[150]]
    finally:
        service.writer.close()
        db.dispose()


def test_the_webhook_follows_no_redirect_and_gives_up(settings: Any, receiver: str) -> None:
    Receiver.redirect = True
    outcome = send_webhook(receiver, {"alerts": ["x"]}, settings, attempts=2, backoff=0.01)
    assert outcome == {"error": "HTTP 307", "attempts": 1}  # a 3xx is the receiver's answer: no retry
    strict = load_settings(home=settings.home, database_url=settings.resolved_database_url)
    refused = send_webhook(receiver, {"alerts": ["x"]}, strict)
    assert refused["attempts"] == 0 and "must be an https:// URL" in refused["error"]  # checked again at send time
    assert len(Receiver.received) == 0
