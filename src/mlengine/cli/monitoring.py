"""``mle versions logs query`` and ``mle versions monitoring run|describe|history|report``, and
the monitoring options of ``mle versions create`` (``--training-data``, ``--log-sampling``...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, fail, parse_list, project_of, project_option

RUNS_TABLE = ("table(name.basename():label=RUN, window.startTime:label=START, window.endTime:label=END, rows, "
              "alerts.join(','):label=ALERTS)")


def _version_path(project: str | None, model: str, version: str) -> str:
    return (f"/v1/projects/{quote(project_of(project), safe='')}/models/{quote(model, safe='')}"
            f"/versions/{quote(version, safe='')}")


# Options of `mle versions create` ---------------------------------------------------------------
def create_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The monitoring options of ``mle versions create`` (keyword arguments of :func:`fields`)."""
    options = [
        click.option("--training-data", default=None, metavar="URI",
                     help="Training data for the skew baseline (files or wildcards: CSV, JSON lines, Parquet, "
                          "TFRecord) when the model is not a training job's export."),
        click.option("--training-data-format", default=None, type=click.Choice(
            ["CSV", "JSONL", "PARQUET", "TFRECORD"], case_sensitive=False), help="Default: from the file name."),
        click.option("--training-data-columns", default=None, metavar="NAME,...",
                     help="Column names of a CSV without a header, in order."),
        click.option("--log-sampling", type=click.FloatRange(0, 1), default=None, metavar="FRACTION",
                     help="requestLoggingConfig.samplingPercentage: the share of predict calls logged (0 to 1)."),
        click.option("--monitoring-interval", default=None, metavar="DURATION",
                     help="Run skew and drift analysis this often (e.g. 3600s); sets monitoringConfig."),
        click.option("--alert-webhook", default=None, metavar="URL", help="monitoringConfig.alertWebhook (https)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def fields(training_data: str | None = None, training_data_format: str | None = None,
           training_data_columns: str | None = None, log_sampling: float | None = None,
           monitoring_interval: str | None = None, alert_webhook: str | None = None,
           server_path: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Version fields from the options of :func:`create_options`."""
    body: dict[str, Any] = {}
    if training_data:
        data: dict[str, Any] = {"uri": server_path(training_data) if server_path else training_data}
        if training_data_format:
            data["format"] = training_data_format.upper()
        if training_data_columns:
            data["columns"] = parse_list(training_data_columns)
            data["header"] = False
        body["trainingData"] = data
    elif training_data_format or training_data_columns:
        raise click.UsageError("--training-data-format and --training-data-columns need --training-data.")
    if log_sampling is not None:
        body["requestLoggingConfig"] = {"samplingPercentage": log_sampling}
    if monitoring_interval or alert_webhook:
        body["monitoringConfig"] = {k: v for k, v in (("interval", monitoring_interval),
                                                       ("alertWebhook", alert_webhook)) if v}
    return body


# mle versions logs ---------------------------------------------------------------------------------
@click.group(cls=MleGroup)
def logs() -> None:
    """Request-response logs of a version (requestLoggingConfig).

    \b
    Examples:
      mle versions logs query taxifare v1 "SELECT count(*) FROM logs"
      mle versions logs query taxifare v1 "SELECT time, raw_data FROM logs ORDER BY time DESC LIMIT 5"
    """


@logs.command()
@click.argument("model")
@click.argument("version")
@click.argument("sql")
@project_option
@click.option("--max-rows", type=click.IntRange(1, 10_000), default=1000, help="Most rows returned.")
def query(model: str, version: str, sql: str, project: str | None, max_rows: int) -> None:
    """Run SQL (DuckDB) over the logged calls of MODEL's VERSION: the table ``logs`` with the
    columns model, model_version, time, raw_data, raw_prediction, groundtruth, request_id, status.

    \b
    Examples:
      mle versions logs query taxifare v1 "SELECT count(*) AS calls FROM logs"
      mle versions logs query taxifare v1 "SELECT status, count(*) FROM logs GROUP BY status" --format json
    """
    result = client().request("POST", _version_path(project, model, version) + "/requestLogs:query",
                              json={"sql": sql, "maxRows": max_rows})
    rows = [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]
    columns = ",".join(f"{name}:label={name.upper()}" for name in result["columns"] if name.isidentifier())
    output.print_list(rows, f"table({columns})" if columns else "json")
    if result.get("truncated"):
        output.status(f"(only the first {max_rows} rows; --max-rows for more)")


# mle versions monitoring ---------------------------------------------------------------------------
@click.group(cls=MleGroup)
def monitoring() -> None:
    """Training-serving skew and drift of a version.

    \b
    Examples:
      mle versions monitoring describe taxifare v1
      mle versions monitoring run taxifare v1
      mle versions monitoring history taxifare v1
      mle versions monitoring report taxifare v1 --output report.html
    """


@monitoring.command()
@click.argument("model")
@click.argument("version")
@project_option
def describe(model: str, version: str, project: str | None) -> None:
    """The version's monitoring: its baseline (training data, features, unmatched features), the
    logging counters and the last run.

    \b
    Examples:
      mle versions monitoring describe taxifare v1
      mle versions monitoring describe taxifare v1 --format 'value(baseline.state)'
    """
    output.print_resource(client().request("GET", _version_path(project, model, version) + "/monitoring"))


@monitoring.command()
@click.argument("model")
@click.argument("version")
@project_option
@click.option("--start-time", default=None, metavar="RFC3339", help="Window start (default: the last run's end).")
@click.option("--end-time", default=None, metavar="RFC3339", help="Window end (default: now).")
@click.option("--recompute-baseline", is_flag=True, help="Compute the training statistics again first.")
def run(model: str, version: str, project: str | None, start_time: str | None, end_time: str | None,
        recompute_baseline: bool) -> None:
    """Analyse the serving window now: skew against the training data, drift against the last run.

    \b
    Examples:
      mle versions monitoring run taxifare v1
      mle versions monitoring run taxifare v1 --start-time 2026-01-01T00:00:00Z --recompute-baseline
    """
    body: dict[str, Any] = {k: v for k, v in (("startTime", start_time), ("endTime", end_time)) if v}
    if recompute_baseline:
        body["recomputeBaseline"] = True
    output.print_resource(client().request("POST", _version_path(project, model, version) + ":runMonitoring",
                                           json=body))


@monitoring.command()
@click.argument("model")
@click.argument("version")
@project_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Most runs listed.")
def history(model: str, version: str, project: str | None, limit: int | None) -> None:
    """The version's monitoring runs, newest first.

    \b
    Examples:
      mle versions monitoring history taxifare v1
      mle versions monitoring history taxifare v1 --limit 5 --format json
    """
    c = client()
    path = _version_path(project, model, version) + "/monitoringRuns"
    found: list[dict[str, Any]] = []
    token: str | None = None
    while limit is None or len(found) < limit:
        page = c.request("GET", path, params={"pageToken": token})
        found.extend(page.get("monitoringRuns") or [])
        token = page.get("nextPageToken")
        if not token:
            break
    output.print_list(found[:limit] if limit else found, RUNS_TABLE)


@monitoring.command()
@click.argument("model")
@click.argument("version")
@project_option
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, writable=True),
              help="The HTML file to write.")
def report(model: str, version: str, project: str | None, output_path: str) -> None:
    """Write a self-contained HTML page: per feature, training and serving histograms and the
    distance over time.

    \b
    Examples:
      mle versions monitoring report taxifare v1 --output report.html
    """
    page = client().request("GET", _version_path(project, model, version) + "/monitoring:report",
                            params={"alt": "json"})
    if not isinstance(page, dict) or "html" not in page:
        raise fail("the server answered without a report")
    Path(output_path).write_text(page["html"], encoding="utf-8")
    output.status(f"Wrote {output_path}.")
