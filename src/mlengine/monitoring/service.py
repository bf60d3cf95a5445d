"""The monitoring of model versions inside the control plane: request logging wired onto the
serving pools, baselines computed once per version, runs on each version's schedule and on
demand, and the JSON the API and the console show.

Contract
--------
- :meth:`MonitoringService.attach` is the serving manager's pool hook: it runs on the event
  loop when a version's pool is made and installs the request logger on it (a no-op per call
  when the version logs nothing).
- :meth:`start` starts one background task (every ``tick`` seconds): it picks up changed
  sampling rates, computes missing baselines, and starts the runs that are due. Baselines and
  runs execute in a worker thread, one at a time, never on the event loop; a run that fails is
  logged and tried again at the next interval.
- The other public methods block (store, files) and are called from the API's thread pool;
  they return JSON-able dicts. Errors are :class:`~mlengine.errors.MLEngineError` naming the
  field or resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.errors import MLEngineError, failed_precondition, invalid
from mlengine.monitoring import alerts, baseline, logs, report, runs, spec
from mlengine.storage.policy import uri_policy
from mlengine.store.serving import ModelRow, ServingRepository, VersionRow

log = logging.getLogger("mlengine.monitoring")
VersionDir = Callable[[ModelRow, VersionRow], Path]
READY = "READY"


def version_name(project: str, model: str, version: str) -> str:
    return f"projects/{project}/models/{model}/versions/{version}"


def _epoch(value: Any, field: str) -> float:
    if not isinstance(value, str):
        raise invalid(field, "must be an RFC 3339 time like 2026-01-01T00:00:00Z")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, f"{value!r} is not an RFC 3339 time like 2026-01-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _created(row: VersionRow) -> float:
    when = row.create_time
    return (when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)).timestamp()


class MonitoringService:
    def __init__(self, settings: Settings, db: Any, version_dir: VersionDir, tick: float = 2.0) -> None:
        self.settings = settings
        self.db = db
        self.repo = ServingRepository(db)
        self.version_dir = version_dir
        self.tick = tick
        self.writer = logs.RequestLogWriter(settings.monitoring_log_capacity, settings.monitoring_log_flush_seconds)
        self.targets: dict[int, logs.LogTarget] = {}
        self._task: asyncio.Task[None] | None = None
        self._work = threading.Lock()  # one baseline or run at a time
        self._failed_baselines: set[int] = set()
        self._has_baseline: set[int] = set()  # version ids whose baseline file exists (read once)
        self._last_end: dict[int, float] = {}  # version id -> end of its last run's window

    # Serving hook ----------------------------------------------------------------------------
    def attach(self, model: ModelRow, row: VersionRow, pool: Any) -> None:
        """Install the request logger on a version's pool (see the module contract)."""
        config = row.spec.get("requestLoggingConfig") or {}
        target = logs.LogTarget(model.name, row.name, self.version_dir(model, row),
                                float(config.get("samplingPercentage", 0.0)))
        self.targets[row.id] = target
        record = self.writer.record
        pool.observe = lambda body, result: record(target, body, result[0], result[1])

    # Background ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.writer.close)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.pass_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a monitoring pass failed")
            await asyncio.sleep(self.tick)

    def _versions(self) -> list[tuple[ModelRow, VersionRow]]:
        return [(m, v) for m in self.repo.all_models() for v in self.repo.versions_of(m.id)]

    def pass_once(self, now: float | None = None) -> None:
        """Refresh sampling rates, compute missing baselines, run what is due (blocking)."""
        now = time.time() if now is None else now
        versions = self._versions()
        live = {row.id for _, row in versions}
        for gone in set(self.targets) - live:  # deleted versions
            self.targets.pop(gone, None)
            self._last_end.pop(gone, None)
        for model, row in versions:
            target = self.targets.get(row.id)
            if target is not None:
                target.sampling = float((row.spec.get("requestLoggingConfig") or {}).get("samplingPercentage", 0.0))
            if row.state != READY:
                continue
            directory = self.version_dir(model, row)
            if row.id not in self._failed_baselines and row.id not in self._has_baseline:
                if not baseline.baseline_path(directory).exists():
                    self._baseline(model, row, directory)
                self._has_baseline.add(row.id)
            config = row.spec.get("monitoringConfig")
            if not config:
                continue
            if row.id not in self._last_end:
                last = runs.latest(directory)
                self._last_end[row.id] = last["window"]["end"] if last else _created(row)
            start = self._last_end[row.id]
            if now - start >= spec.parse_interval(config.get("interval", spec.DEFAULT_INTERVAL), "interval"):
                try:
                    self._run(model, row, directory, start, now)
                except Exception:
                    log.exception("monitoring run of %s failed", version_name(model.project, model.name, row.name))

    def _baseline(self, model: ModelRow, row: VersionRow, directory: Path) -> dict[str, Any]:
        name = version_name(model.project, model.name, row.name)
        source = row.spec.get("trainingData")
        origin = "trainingData"
        if not source:
            job = baseline.find_training_job(self.db, model.project, row.spec.get("deploymentUri", ""))
            source = baseline.source_from_job(job) if job is not None else None
            origin = f"training job {job.job_id}" if job is not None else ""
        else:
            source = {"uris": [source["uri"]], **{k: v for k, v in source.items() if k != "uri"}}
        if not source:
            record: dict[str, Any] = {"error": "no training data: the version is not from a training job's export "
                                      "whose arguments name its data; set trainingData (--training-data)"}
            self._failed_baselines.add(row.id)
            return record
        config = row.spec.get("monitoringConfig") or {}
        features = (row.internal or {}).get("features")
        policy = uri_policy(self.settings)
        try:
            with self._work:
                record = baseline.compute(source, features, buckets=int(config.get("buckets", 20)),
                                          binning=str(config.get("binning", "QUANTILE")).lower(),
                                          check=lambda uri: policy.check(uri, "trainingData.uri"))
            record["origin"] = origin
            unmatched = f"; unmatched: {record['unmatched']}" if record["unmatched"] else ""
            log.info("baseline of %s: %d rows, features %s%s", name, record["profile"]["rows"],
                     ", ".join(record["features"]), unmatched)
        except MLEngineError as err:
            record = {"error": err.message, "source": source, "origin": origin}
        except Exception as err:  # unreadable data: say so on the version, try again on demand
            log.exception("baseline of %s failed", name)
            record = {"error": f"{type(err).__name__}: {err}", "source": source, "origin": origin}
        baseline.save(directory, record)
        return record

    def _run(self, model: ModelRow, row: VersionRow, directory: Path, start: float, end: float) -> dict[str, Any]:
        name = version_name(model.project, model.name, row.name)
        config = row.spec.get("monitoringConfig") or {}
        self.writer.flush()
        with self._work:
            record = runs.analyze(directory, baseline.load(directory), config, start, end, runs.latest(directory),
                                  (row.internal or {}).get("features") or ())
            runs.save(directory, record)
            self._last_end[row.id] = max(end, self._last_end.get(row.id, end))
        if record["alerts"]:
            log.warning("monitoring %s: skew or drift on %s (run %s)", name, ", ".join(record["alerts"]),
                        record["name"])
            webhook = config.get("alertWebhook")
            if webhook:
                record["webhook"] = alerts.send_webhook(webhook, alerts.payload(name, record), self.settings)
                runs.save_existing(directory, record)
        return record

    # API ----------------------------------------------------------------------------------------
    def _find(self, project: str, model: str, version: str) -> tuple[ModelRow, VersionRow, Path]:
        model_row = self.repo.get_model(project, model)
        row = self.repo.get_version(model_row, version)
        return model_row, row, self.version_dir(model_row, row)

    def describe(self, project: str, model: str, version: str) -> dict[str, Any]:
        model_row, row, directory = self._find(project, model, version)
        name = version_name(project, model, version)
        found = baseline.load(directory)
        base: dict[str, Any] = {"state": "PENDING"}
        if found is not None and found.get("error"):
            base = {"state": "FAILED", "error": found["error"], "source": found.get("source")}
        elif found is not None:
            from mlengine.monitoring.stats import summary

            base = {"state": "READY", "origin": found.get("origin"), "source": found.get("source"),
                    "read": found.get("read"), "features": found.get("features"), "unmatched": found.get("unmatched"),
                    "featuresFrom": found.get("featuresFrom"), "statistics": summary(found["profile"])}
        elif row.id in self._failed_baselines:
            base = {"state": "NONE", "error": "no training data: set trainingData (--training-data)"}
        key = str(directory)
        out: dict[str, Any] = {"name": f"{name}/monitoring", "baseline": base,
                               "logging": {"written": self.writer.written[key], "dropped": self.writer.dropped[key]}}
        for field in spec.FIELDS:
            if row.spec.get(field):
                out[field] = row.spec[field]
        latest = runs.latest(directory)
        if latest is not None:
            out["lastRun"] = runs.render(latest, name)
        return out

    def run(self, project: str, model: str, version: str, body: Mapping[str, Any]) -> dict[str, Any]:
        model_row, row, directory = self._find(project, model, version)
        if row.state != READY:
            raise failed_precondition(f"version {version} is {row.state}, not READY")
        unknown = set(body) - {"startTime", "endTime", "recomputeBaseline"}
        if unknown:
            raise invalid(sorted(unknown)[0], "unknown field; known: startTime, endTime, recomputeBaseline")
        now = time.time()
        end = _epoch(body["endTime"], "endTime") if body.get("endTime") else now
        if body.get("startTime"):
            start = _epoch(body["startTime"], "startTime")
        else:
            last = runs.latest(directory)
            start = last["window"]["end"] if last else _created(row)
        if start >= end:
            raise invalid("startTime", "must be before endTime")
        if body.get("recomputeBaseline") or baseline.load(directory) is None:
            self._failed_baselines.discard(row.id)
            self._baseline(model_row, row, directory)
        return runs.render(self._run(model_row, row, directory, start, end), version_name(project, model, version))

    def compute_baseline(self, project: str, model: str, version: str) -> dict[str, Any]:
        model_row, row, directory = self._find(project, model, version)
        self._failed_baselines.discard(row.id)
        self._baseline(model_row, row, directory)
        return self.describe(project, model, version)

    def list_runs(self, project: str, model: str, version: str, page_size: int | None,
                  page_token: str | None) -> dict[str, Any]:
        _, _, directory = self._find(project, model, version)
        found, token = runs.page(directory, page_size, page_token)
        parent = version_name(project, model, version)
        out: dict[str, Any] = {"monitoringRuns": [runs.render(r, parent) for r in found]}
        if token:
            out["nextPageToken"] = token
        return out

    def get_run(self, project: str, model: str, version: str, run_id: str) -> dict[str, Any]:
        _, _, directory = self._find(project, model, version)
        return runs.render(runs.load(directory, run_id), version_name(project, model, version), full=True)

    def query_logs(self, project: str, model: str, version: str, body: Mapping[str, Any]) -> dict[str, Any]:
        _, row, directory = self._find(project, model, version)
        max_rows = body.get("maxRows", logs.QUERY_MAX_ROWS)
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= logs.QUERY_MAX_ROWS:
            raise invalid("maxRows", f"must be an integer from 1 to {logs.QUERY_MAX_ROWS}")
        self.writer.flush()
        alias = spec.table_alias(row.spec.get("requestLoggingConfig") or {})
        return logs.query(directory, body.get("sql", ""), table_name=alias, max_rows=max_rows)

    def _recent_runs(self, directory: Path, limit: int = 200) -> list[dict[str, Any]]:
        return [runs.load(directory, i) for i in runs.run_ids(directory)[:limit]]

    def histograms(self, project: str, model: str, version: str) -> dict[str, Any]:
        """Training and serving shares per feature, and distances over time (for the console)."""
        _, _, directory = self._find(project, model, version)
        recent = self._recent_runs(directory)
        return {"histograms": report.histograms(baseline.load(directory), recent), "timeline": report.timeline(recent)}

    def report_html(self, project: str, model: str, version: str) -> str:
        _, _, directory = self._find(project, model, version)
        return report.render_html(f"Monitoring of {version_name(project, model, version)}", baseline.load(directory),
                                  self._recent_runs(directory))
