"""The server's own health: ``GET /healthz`` (liveness), ``GET /readyz`` (readiness) and
``GET /metrics`` (Prometheus text format).

- ``/healthz`` answers 200 ``{"status": "ok"}`` while the process serves HTTP: no token, no
  detail (a load balancer or ``kubectl`` probes it).
- ``/readyz`` answers 200 when the metadata store answers a query (within
  :data:`READY_TIMEOUT_SECONDS`) and the scheduler thread runs, else 503; the body names each
  check and whether it passed, never an error text (it needs no token either).
- ``/metrics`` needs ``mlengine.metrics.get`` on the server (admins; a token for Prometheus:
  ``POST /v1/tokens {"name": "prometheus", "role": "none"}`` and bind it roles/ml.admin, or
  serve it without a token on ``MLE_METRICS_PORT``, bound to ``MLE_METRICS_HOST``). It holds the
  counters of :mod:`mlengine.core.metrics` plus gauges read when scraped: jobs by project, kind
  and state, the age of the oldest queued job, replicas per version, services by state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlengine.core import metrics
from mlengine.core.timeutil import as_utc

log = logging.getLogger("mlengine.server")
router = APIRouter()
READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_answers(db: Any) -> bool:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return True


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    db = getattr(getattr(state, "token_repo", None), "db", None)
    database = False
    if db is not None:
        try:
            database = await asyncio.wait_for(run_in_threadpool(_database_answers, db), READY_TIMEOUT_SECONDS)
        except Exception:  # unreachable, locked, timed out: not ready (no detail without a token)
            database = False
    scheduler = getattr(state, "scheduler", None)
    running = bool(scheduler is not None and scheduler.alive)
    ready = database and running
    body = {"status": "ok" if ready else "unavailable",
            "checks": {"database": "ok" if database else "failing", "scheduler": "ok" if running else "failing"}}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics_text(request: Request) -> Response:
    body, content_type = await run_in_threadpool(metrics.exposition, metrics_registry(request.app.state))
    return Response(body, media_type=content_type)


def metrics_registry(state: Any) -> Any:
    """The app's registry: :mod:`mlengine.core.metrics` and the gauges of this server's parts
    (made once per app, kept on ``state``)."""
    reg = getattr(state, "metrics_registry", None)
    if reg is None:
        reg = state.metrics_registry = metrics.registry(lambda: _jobs(state), lambda: _replicas(state),
                                                        lambda: _services(state))
    return reg


def _jobs(state: Any) -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily

    repo = getattr(getattr(state, "jobs", None), "repo", None)
    if repo is None:
        return
    jobs = GaugeMetricFamily("mlengine_jobs", "Jobs by project, kind and state.", labels=["project", "kind", "state"])
    for project, kind, job_state, count in repo.count_by_state():
        jobs.add_metric([project, kind, job_state], count)
    yield jobs
    oldest = GaugeMetricFamily("mlengine_jobs_oldest_queued_seconds", "Age of the oldest QUEUED job.",
                               labels=["project"])
    now = time.time()
    for project, created in repo.oldest_queued():
        when = as_utc(created)
        if when is not None:
            oldest.add_metric([project], max(0.0, now - when.timestamp()))
    yield oldest


def _replicas(state: Any) -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily

    serving = getattr(state, "serving", None)
    routes = getattr(serving, "routes", None)
    if not routes:
        return
    family = GaugeMetricFamily("mlengine_version_replicas", "Replicas of each version, ready or starting.",
                               labels=["project", "model", "version", "state"])
    for (project, model), route in list(routes.items()):
        for name, version in list(route.versions.items()):
            pool = getattr(version, "pool", None)
            counts = pool.counts() if pool is not None else {"ready": 0, "starting": 0}
            for replica_state, count in counts.items():
                family.add_metric([project, model, name, replica_state], count)
    yield family


def _services(state: Any) -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily

    manager = getattr(state, "services", None)
    if manager is None:
        return
    family = GaugeMetricFamily("mlengine_services", "Managed services (TensorBoard...) by kind and state.",
                               labels=["kind", "state"])
    counts: dict[tuple[str, str], int] = {}
    for row in manager.repo.all():
        counts[(row.kind, row.state)] = counts.get((row.kind, row.state), 0) + 1
    for (kind, service_state), count in sorted(counts.items()):
        family.add_metric([kind, service_state], count)
    yield family


def start_metrics_port(state: Any, settings: Any) -> Any:
    """Serve ``/metrics`` without a token on ``MLE_METRICS_HOST:MLE_METRICS_PORT`` from a daemon
    thread; returns the HTTP server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host,
                                        registry=metrics_registry(state))
    log.info("metrics on http://%s:%d/metrics (no token)", settings.metrics_host, settings.metrics_port)
    return server
