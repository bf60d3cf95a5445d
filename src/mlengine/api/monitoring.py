"""Monitoring of a version (mlengine extension of ``projects.models.versions``): its request
logs, training baseline, skew and drift runs, and the report page.

Handlers call :class:`~mlengine.monitoring.service.MonitoringService` in a thread (it blocks
on files and the store); its errors are the API's (Google error shape, the field named).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from mlengine.api.body import read_json
from mlengine.errors import invalid

router = APIRouter()
VERSION = "/v1/projects/{project}/models/{model}/versions/{version}"


def _service(request: Request) -> Any:
    return request.app.state.monitoring


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


@router.get(VERSION + "/monitoring")
async def describe(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).describe, project, model, version)


@router.post(VERSION + ":runMonitoring")
async def run(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    body = _object(await read_json(request, required=False))
    return await run_in_threadpool(_service(request).run, project, model, version, body)


@router.post(VERSION + "/monitoring:computeBaseline")
async def compute_baseline(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).compute_baseline, project, model, version)


@router.get(VERSION + "/monitoringRuns")
async def list_runs(
    project: str, model: str, version: str, request: Request,
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).list_runs, project, model, version, pageSize, pageToken)


@router.get(VERSION + "/monitoringRuns/{run}")
async def get_run(project: str, model: str, version: str, run: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).get_run, project, model, version, run)


@router.get(VERSION + "/monitoring:histograms")
async def histograms(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).histograms, project, model, version)


@router.get(VERSION + "/monitoring:report", response_class=HTMLResponse, response_model=None)
async def report(project: str, model: str, version: str, request: Request,
                 alt: str | None = None) -> HTMLResponse | JSONResponse:
    """The report page; with ``alt=json``, ``{"html": page}`` (for clients that read JSON)."""
    page = await run_in_threadpool(_service(request).report_html, project, model, version)
    if alt == "json":
        return JSONResponse({"html": page})
    if alt not in (None, "", "html"):
        raise invalid("alt", "must be json or html")
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.post(VERSION + "/requestLogs:query")
async def query_logs(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    body = _object(await read_json(request))
    return await run_in_threadpool(_service(request).query_logs, project, model, version, body)
