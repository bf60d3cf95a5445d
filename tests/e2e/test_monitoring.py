"""Monitoring end to end on a real server: a scikit-learn model of Chicago taxi trips
(categorical and numeric features, missing values) deployed with --training-data and request
logging at 100 %.

- 1,000 held-out trips sent by 32 concurrent clients: every prediction answered, every call
  logged (counted with `mle versions logs query`), no skew;
- a window where a new payment type appears, trip_seconds is dropped and trip_miles (long
  tailed) is tripled: each is its own anomaly, the untouched features stay quiet, and drift
  against the previous window is reported too;
- a window of a few rows alerts on nothing and says why; at 0 % nothing is written;
- a webhook on a private address is refused when the version is configured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import MODELS, kill_serving

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DATA = Path(__file__).resolve().parents[1] / "monitoring" / "data" / "chicago_taxi.csv"
NUMERIC = ["trip_miles", "trip_seconds", "fare", "pickup_community_area"]
CATEGORICAL = ["payment_type", "company"]
VERSION = f"{MODELS}/chicago/versions/v1"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_MONITORING_LOG_FLUSH_SECONDS": "1"}).start()
    yield srv
    srv.stop()
    kill_serving(srv.home)


@pytest.fixture(scope="module")
def trips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model trained on a random 2,000 trips (written as the training CSV) and 1,000 held out."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    work = tmp_path_factory.mktemp("chicago")
    frame = pd.read_csv(DATA)
    order = np.random.default_rng(7).permutation(len(frame))
    train, held = frame.iloc[order[1000:]], frame.iloc[order[:1000]]
    train.to_csv(work / "train.csv", index=False)
    pre = ColumnTransformer([
        ("num", SimpleImputer(strategy="median"), NUMERIC),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore")), CATEGORICAL)])
    model = make_pipeline(pre, Ridge()).fit(train[NUMERIC + CATEGORICAL], train["tips"])
    (work / "model").mkdir()
    joblib.dump(model, work / "model" / "model.joblib")
    rows = json.loads(held[NUMERIC + CATEGORICAL].to_json(orient="records"))  # NaN -> null
    return {"dir": work, "held": rows}


async def _send(url: str, token: str, bodies: list[dict[str, Any]], concurrency: int = 32) -> list[int]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        async def one(body: dict[str, Any]) -> int:
            async with limit:
                return (await client.post(url, json=body)).status_code

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def send(server: ServerProcess, rows: list[dict[str, Any]], per_request: int = 5) -> list[int]:
    bodies = [{"instances": rows[i:i + per_request]} for i in range(0, len(rows), per_request)]
    return asyncio.run(_send(server.url + VERSION + ":predict", server.token, bodies))


def logged(server: ServerProcess, cli: bool = False) -> int:
    sql = "SELECT count(*) AS n FROM logs"
    if cli:
        out = server.mle("versions", "logs", "query", "chicago", "v1", sql, "--format", "json", check=True).stdout
        return int(json.loads(out)[0]["n"])
    response = server.api("POST", VERSION + "/requestLogs:query", json={"sql": sql})
    assert response.status_code == 200, response.text
    return int(response.json()["rows"][0][0])


def run(server: ServerProcess, cli: bool = False) -> dict[str, Any]:
    if cli:
        out = server.mle("versions", "monitoring", "run", "chicago", "v1", "--format", "json", check=True).stdout
        return dict(json.loads(out))
    response = server.api("POST", VERSION + ":runMonitoring", json={})
    assert response.status_code == 200, response.text
    return dict(response.json())


def findings(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in section["findings"]}


@pytest.fixture(scope="module")
def deployed(server: ServerProcess, trips: dict[str, Any]) -> dict[str, Any]:
    server.mle("models", "create", "chicago", check=True)
    server.mle("versions", "create", "v1", "--model", "chicago", "--origin", str(trips["dir"] / "model"),
               "--training-data", str(trips["dir"] / "train.csv"), "--log-sampling", "1", check=True, timeout=240)
    version = server.api("GET", VERSION).json()
    assert version["state"] == "READY", version
    assert version["requestLoggingConfig"] == {"samplingPercentage": 1.0}
    assert version["trainingData"]["uri"] == str(trips["dir"] / "train.csv")
    return version


def test_logging_at_100_percent_under_load_loses_nothing_and_held_out_rows_raise_no_skew(
        server: ServerProcess, trips: dict[str, Any], deployed: dict[str, Any]) -> None:
    statuses = send(server, trips["held"])
    assert statuses == [200] * 200  # no prediction lost or failed while logging
    assert logged(server, cli=True) == 200

    record = run(server, cli=True)
    assert record["rows"] == 1000 and record["requests"] == 200
    assert record["skew"]["alerts"] == [] and record["alerts"] == []
    seen = findings(record["skew"])
    assert set(seen) == set(NUMERIC + CATEGORICAL)  # the model's features, from feature_names_in_
    assert seen["trip_miles"]["metric"] == "jensen_shannon" and seen["payment_type"]["metric"] == "l_infinity"
    assert all(f["sampleSize"] > 0 and f["distance"] <= f["threshold"] for f in seen.values())
    assert "no previous window" in record["drift"]["note"]

    described = json.loads(server.mle("versions", "monitoring", "describe", "chicago", "v1", "--format", "json",
                                      check=True).stdout)
    base = described["baseline"]
    assert base["state"] == "READY" and base["featuresFrom"] == "model" and base["unmatched"] == {}
    assert base["statistics"]["rows"] == 2000 and described["logging"]["dropped"] == 0


def test_each_change_is_its_own_anomaly_then_drift_then_a_small_window_says_why(
        server: ServerProcess, trips: dict[str, Any], deployed: dict[str, Any], tmp_path: Path) -> None:
    changed = []
    for i, row in enumerate(trips["held"]):
        row = {k: v for k, v in row.items() if k != "trip_seconds"}  # a dropped column
        row["trip_miles"] = row["trip_miles"] * 3 if row["trip_miles"] is not None else None
        if i % 3 == 0:
            row["payment_type"] = "Bitcoin"
        changed.append(row)
    send(server, changed)  # the model refuses rows without trip_seconds; the calls are logged all the same
    record = run(server)
    assert record["rows"] == 1000
    assert sorted(record["skew"]["alerts"]) == ["payment_type", "trip_miles", "trip_seconds"]
    seen = findings(record["skew"])
    assert [a["type"] for a in seen["payment_type"]["anomalies"]] == ["NEW_CATEGORY"]
    assert seen["payment_type"]["anomalies"][0]["values"] == ["Bitcoin"]
    assert [a["type"] for a in seen["trip_seconds"]["anomalies"]] == ["MISSING_FEATURE"]
    assert seen["trip_miles"]["exceeded"] and seen["trip_miles"]["distance"] > seen["trip_miles"]["threshold"]
    for quiet in ("fare", "company", "pickup_community_area"):
        assert not seen[quiet]["alert"], seen[quiet]
    assert {"payment_type", "trip_miles"} <= set(record["drift"]["alerts"])  # against the held-out window

    send(server, changed[:10], per_request=1)
    small = run(server)
    assert small["rows"] == 10 and small["alerts"] == []
    assert "fewer than minRows 100" in small["skew"]["note"]

    history = json.loads(server.mle("versions", "monitoring", "history", "chicago", "v1", "--format", "json",
                                    check=True).stdout)
    assert [h["rows"] for h in history] == [10, 1000, 1000]
    page = server.api("GET", VERSION + "/monitoringRuns", params={"pageSize": 2}).json()
    assert len(page["monitoringRuns"]) == 2 and page["nextPageToken"]
    report = tmp_path / "report.html"
    server.mle("versions", "monitoring", "report", "chicago", "v1", "--output", str(report), check=True)
    page_html = report.read_text()
    assert "<svg" in page_html and "<script" not in page_html
    assert '<h2>trip_miles <strong class="alert">ALERT in 1 of 3 runs</strong></h2>' in page_html


def test_at_0_percent_nothing_is_written(server: ServerProcess, trips: dict[str, Any],
                                         deployed: dict[str, Any]) -> None:
    before = logged(server)
    patched = server.api("PATCH", VERSION, params={"updateMask": "requestLoggingConfig"},
                         json={"requestLoggingConfig": {"samplingPercentage": 0}})
    assert patched.status_code == 200, patched.text
    time.sleep(3)  # the monitoring pass picks the new rate up (every 2 s)
    assert send(server, trips["held"][:50]) == [200] * 10
    assert logged(server) == before


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "https://10.0.0.7/hook", "https://169.254.169.254/x"])
def test_a_webhook_on_a_private_address_is_refused_at_configuration(server: ServerProcess, trips: dict[str, Any],
                                                                    deployed: dict[str, Any], url: str) -> None:
    response = server.api("POST", f"{MODELS}/chicago/versions", json={
        "name": "v2", "deploymentUri": str(trips["dir"] / "model"),
        "monitoringConfig": {"interval": "60s", "alertWebhook": url}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "monitoringConfig.alertWebhook" in error["message"]
    patched = server.api("PATCH", VERSION, params={"updateMask": "monitoringConfig"},
                         json={"monitoringConfig": {"alertWebhook": url}})
    assert patched.status_code == 400 and "monitoringConfig.alertWebhook" in patched.json()["error"]["message"]
