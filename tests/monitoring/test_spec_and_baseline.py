"""Monitoring fields of a Version (errors name the field; webhooks to private addresses are
refused unless allowed) and the baseline found without asking: a trainer's data arguments, the
column names of a header-less CSV read from the trainer's own code, features mapped by name."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mlengine.config import load_settings
from mlengine.errors import MLEngineError
from mlengine.monitoring import baseline, spec

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "taxifare"
TAXI_FEATURES = ["pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude",
                 "passenger_count"]


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    return load_settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **overrides)


def _refused(call: Any, field: str) -> str:
    with pytest.raises(MLEngineError) as caught:
        call()
    assert caught.value.code.http_status == 400 and field in caught.value.message, caught.value.message
    return caught.value.message


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://169.254.169.254/x",
                                 "https://[::1]/hook", "https://localhost/hook"])
def test_a_webhook_on_a_private_address_is_refused(tmp_path: Path, url: str) -> None:
    settings = _settings(tmp_path)
    message = _refused(lambda: spec.validate({"monitoringConfig": {"alertWebhook": url}}, settings),
                       "monitoringConfig.alertWebhook")
    assert "MLE_URI_ALLOW_PRIVATE_NETWORKS" in message


def test_webhooks_are_https_unless_configured(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _refused(lambda: spec.validate({"monitoringConfig": {"alertWebhook": "http://example.com/x"}}, settings),
             "monitoringConfig.alertWebhook")
    allowed = _settings(tmp_path, uri_allow_private_networks=True, monitoring_webhook_allow_http=True)
    out = spec.validate({"monitoringConfig": {"alertWebhook": "http://127.0.0.1:9/x"}}, allowed)
    assert out["monitoringConfig"]["alertWebhook"] == "http://127.0.0.1:9/x"


@pytest.mark.parametrize(("body", "field"), [
    ({"requestLoggingConfig": {"samplingPercentage": 1.5}}, "requestLoggingConfig.samplingPercentage"),
    ({"requestLoggingConfig": {"samplingPercentage": "most"}}, "requestLoggingConfig.samplingPercentage"),
    ({"requestLoggingConfig": {"rate": 1}}, "requestLoggingConfig.rate"),
    ({"monitoringConfig": {"interval": "30s"}}, "monitoringConfig.interval"),
    ({"monitoringConfig": {"minRows": 0}}, "monitoringConfig.minRows"),
    ({"monitoringConfig": {"thresholds": {"fare": 2}}}, "monitoringConfig.thresholds.fare"),
    ({"monitoringConfig": {"binning": "LOG"}}, "monitoringConfig.binning"),
    ({"trainingData": {"format": "CSV"}}, "trainingData.uri"),
    ({"trainingData": {"uri": "/data/x.csv", "format": "XLS"}}, "trainingData.format"),
    ({"trainingData": "gs://b/x.csv"}, "trainingData"),
])
def test_bad_fields_are_refused_naming_them(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    _refused(lambda: spec.validate(body, _settings(tmp_path)), field)


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    out = spec.validate({"requestLoggingConfig": {"samplingPercentage": 0.5, "bigqueryTableName": "p.d.fares"},
                         "monitoringConfig": {}}, _settings(tmp_path))
    assert out["requestLoggingConfig"] == {"samplingPercentage": 0.5, "bigqueryTableName": "p.d.fares"}
    assert spec.table_alias(out["requestLoggingConfig"]) == "fares"
    assert "monitoringConfig" not in out  # empty: not set
    out = spec.validate({"monitoringConfig": {"interval": "120s"}}, None)
    assert out["monitoringConfig"] == {"interval": "120s", "binning": "QUANTILE", "buckets": 20}


def test_trainer_arguments_name_the_training_data() -> None:
    args = ["--train-data-paths", "a.csv", "b*.csv", "--eval-data-paths", "v.csv", "--train_files=gs://x/1.csv,gs://x/2.csv",
            "--batch-size", "32", "--training-data", "t.parquet"]
    assert baseline.data_args(args) == ["a.csv", "b*.csv", "gs://x/1.csv", "gs://x/2.csv", "t.parquet"]


def test_a_headerless_csv_gets_its_names_from_the_trainer_package(tmp_path: Path) -> None:
    from mlengine.core.packaging import build_sdist

    package = build_sdist(SAMPLE / "trainer", tmp_path / "dist")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE / "data" / "taxi-valid.csv", data / "part-1.csv")
    record = baseline.compute({"uris": [str(data / "*.csv")], "packageUris": [str(package)]}, TAXI_FEATURES)
    assert record["read"]["columnsFrom"] == "trainer package" and record["read"]["header"] is False
    assert record["features"] == TAXI_FEATURES and record["unmatched"] == {}
    features = record["profile"]["features"]
    assert set(features) == set(TAXI_FEATURES)  # fare_amount and key are not the model's
    assert features["pickup_longitude"]["kind"] == "numeric" and -75 < features["pickup_longitude"]["mean"] < -73
    assert features["pickup_datetime"]["kind"] == "text"
    assert record["profile"]["rows"] == 1571


def test_features_without_a_column_are_listed_with_the_reason(tmp_path: Path) -> None:
    from tests.monitoring.conftest import DATA

    record = baseline.compute({"uris": [str(DATA)]}, ["trip_miles", "payment_type", "surge"])
    assert record["read"]["header"] is True
    assert record["features"] == ["trip_miles", "payment_type"]
    assert "no column named 'surge'" in record["unmatched"]["surge"]
    assert record["profile"]["features"]["payment_type"]["kind"] == "categorical"


def test_training_data_inside_the_servers_home_is_never_read(tmp_path: Path) -> None:
    from mlengine.storage.policy import uri_policy

    settings = _settings(tmp_path)
    settings.home.mkdir(parents=True)
    (settings.home / "admin_token").write_text("secret\n")
    outside = tmp_path / "data"
    outside.mkdir()
    (outside / "train.csv").symlink_to(settings.home / "admin_token")
    policy = uri_policy(settings)

    def check(uri: str) -> None:
        policy.check(uri, "trainingData.uri")

    for uri in (str(settings.home / "*"), str(outside / "*.csv")):
        _refused(lambda uri=uri: baseline.compute({"uris": [uri]}, None, check=check), "trainingData.uri")
