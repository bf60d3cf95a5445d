"""The monitoring fields of a Version body, validated and normalized (errors name the field).

- ``requestLoggingConfig`` (AI Platform): ``samplingPercentage``, the share of predict calls
  logged, a fraction from 0 to 1; ``bigqueryTableName``, the name the logs answer to in
  queries (mlengine keeps them in its own storage, not BigQuery).
- ``monitoringConfig`` (mlengine): ``interval`` (a duration such as ``"3600s"``, at least a
  minute; default an hour), ``minRows`` (fewer rows in a window alert on nothing),
  ``thresholds`` (feature → fixed distance) or ``defaultThreshold`` (0.3 = Vertex's) instead of
  the bootstrap, ``binning`` (``QUANTILE`` or ``EQUAL_WIDTH``), ``buckets``, and
  ``alertWebhook``: an https URL (http only with ``MLE_MONITORING_WEBHOOK_ALLOW_HTTP``) whose
  host is no loopback, link-local or private address unless ``MLE_URI_ALLOW_PRIVATE_NETWORKS``.
- ``trainingData`` (mlengine): the baseline's data when the version does not come from a
  training job's export: ``uri`` (files or wildcards), ``format`` (``CSV``, ``JSONL``,
  ``PARQUET``, ``TFRECORD``; default from the extension), ``columns`` (names of a CSV without
  header, in order), ``header`` (whether the CSV's first line names its columns).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mlengine.config import Settings
from mlengine.errors import invalid

FIELDS = ("requestLoggingConfig", "monitoringConfig", "trainingData")
MIN_INTERVAL = 60.0
DEFAULT_INTERVAL = 3600.0
FORMATS = ("CSV", "JSONL", "PARQUET", "TFRECORD")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s?\s*$")


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid(field, f"must be a number from {lo:g} to {hi:g}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise invalid(field, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(field, "must be a JSON object")
    return value


def _known(body: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise invalid(f"{field}.{key}", f"unknown field; known: {', '.join(allowed)}")


def validate_logging(value: Any) -> dict[str, Any]:
    field = "requestLoggingConfig"
    body = _object(value, field)
    _known(body, field, ("samplingPercentage", "bigqueryTableName"))
    rate = _number(body.get("samplingPercentage", 0), f"{field}.samplingPercentage", 0.0, 1.0)
    out: dict[str, Any] = {"samplingPercentage": rate}
    table = body.get("bigqueryTableName")
    if table is not None:
        if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,1024}", table):
            raise invalid(f"{field}.bigqueryTableName", "must be a table name like project.dataset.table")
        out["bigqueryTableName"] = table
    return out


def table_alias(config: Mapping[str, Any]) -> str | None:
    """The name a logs query may use besides ``logs``: the table part of bigqueryTableName."""
    name = config.get("bigqueryTableName")
    return name.rsplit(".", 1)[-1].replace("-", "_") if name else None


def parse_interval(value: Any, field: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        seconds = float(_DURATION.match(value).group(1))  # type: ignore[union-attr]
    else:
        raise invalid(field, f"must be a duration like \"3600s\", got {value!r}")
    if seconds < MIN_INTERVAL:
        raise invalid(field, f"must be at least {MIN_INTERVAL:g}s, got {seconds:g}s")
    return seconds


def validate_monitoring(value: Any, settings: Settings | None) -> dict[str, Any]:
    field = "monitoringConfig"
    body = _object(value, field)
    _known(body, field, ("interval", "minRows", "thresholds", "defaultThreshold", "binning", "buckets",
                         "alertWebhook", "floors"))
    interval = parse_interval(body.get("interval", DEFAULT_INTERVAL), field + ".interval")
    out: dict[str, Any] = {"interval": f"{interval:g}s"}
    if body.get("minRows") is not None:
        rows = body["minRows"]
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise invalid(f"{field}.minRows", "must be an integer >= 1")
        out["minRows"] = rows
    if body.get("thresholds") is not None:
        thresholds = _object(body["thresholds"], f"{field}.thresholds")
        out["thresholds"] = {str(k): _number(v, f"{field}.thresholds.{k}", 0.0, 1.0) for k, v in thresholds.items()}
    if body.get("defaultThreshold") is not None:
        out["defaultThreshold"] = _number(body["defaultThreshold"], f"{field}.defaultThreshold", 0.0, 1.0)
    if body.get("floors") is not None:
        floors = _object(body["floors"], f"{field}.floors")
        _known(floors, f"{field}.floors", ("numeric", "categorical"))
        out["floors"] = {k: _number(v, f"{field}.floors.{k}", 0.0, 1.0) for k, v in floors.items()}
    binning = str(body.get("binning", "QUANTILE")).upper()
    if binning not in ("QUANTILE", "EQUAL_WIDTH"):
        raise invalid(f"{field}.binning", "must be QUANTILE or EQUAL_WIDTH")
    out["binning"] = binning
    buckets = body.get("buckets", 20)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 2 <= buckets <= 200:
        raise invalid(f"{field}.buckets", "must be an integer from 2 to 200")
    out["buckets"] = buckets
    if body.get("alertWebhook"):
        out["alertWebhook"] = check_webhook(body["alertWebhook"], settings, f"{field}.alertWebhook")
    return out


def check_webhook(url: Any, settings: Settings | None, field: str) -> str:
    """An alert target the server may post to: https (http when allowed), a public host unless
    the server allows private networks (the same rule as fetched URIs: no request forgery)."""
    from mlengine.storage.policy import uri_policy

    if not isinstance(url, str):
        raise invalid(field, "must be an https URL")
    parts = urlsplit(url)
    allow_http = bool(settings is not None and settings.monitoring_webhook_allow_http)
    if parts.scheme not in (("https", "http") if allow_http else ("https",)) or not parts.hostname:
        raise invalid(field, f"{url}: must be an https:// URL" + ("" if allow_http else
                      " (http:// needs MLE_MONITORING_WEBHOOK_ALLOW_HTTP)"))
    if parts.username or parts.password or parts.fragment:
        raise invalid(field, f"{url}: credentials and #fragments are not allowed in the URL")
    if settings is not None:
        uri_policy(settings).check_host(parts.hostname, url, field)
    return url


def validate_training_data(value: Any, settings: Settings | None) -> dict[str, Any]:
    from mlengine.storage import uris
    from mlengine.storage.policy import uri_policy

    field = "trainingData"
    body = _object(value, field)
    _known(body, field, ("uri", "format", "columns", "header"))
    uri = body.get("uri")
    if not isinstance(uri, str) or not uri.strip():
        raise invalid(f"{field}.uri", "is required: the training data's files (wildcards allowed)")
    uris.check_usable(uri, f"{field}.uri")
    if settings is not None:
        uri_policy(settings).check(uri, f"{field}.uri")
    out: dict[str, Any] = {"uri": uri}
    fmt = body.get("format")
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.upper() not in FORMATS:
            raise invalid(f"{field}.format", f"must be one of {', '.join(FORMATS)}")
        out["format"] = fmt.upper()
    columns = body.get("columns")
    if columns is not None:
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise invalid(f"{field}.columns", "must be a list of column names")
        out["columns"] = list(columns)
    if body.get("header") is not None:
        if not isinstance(body["header"], bool):
            raise invalid(f"{field}.header", "must be true or false")
        out["header"] = body["header"]
    return out


def validate(body: Mapping[str, Any], settings: Settings | None) -> dict[str, Any]:
    """The monitoring fields of a Version body that are set, normalized."""
    out: dict[str, Any] = {}
    if body.get("requestLoggingConfig") not in (None, {}):
        out["requestLoggingConfig"] = validate_logging(body["requestLoggingConfig"])
    if body.get("monitoringConfig") not in (None, {}):
        out["monitoringConfig"] = validate_monitoring(body["monitoringConfig"], settings)
    if body.get("trainingData") not in (None, {}):
        out["trainingData"] = validate_training_data(body["trainingData"], settings)
    return out
