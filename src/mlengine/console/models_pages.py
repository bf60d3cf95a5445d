"""Models, a model's versions, a version, and operations."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlengine.console import traffic
from mlengine.console.jobs_pages import render, script_json
from mlengine.console.session import main_state
from mlengine.errors import Code, MLEngineError, invalid

router = APIRouter()
PAGE = 50


def _token(request: Request) -> str | None:
    token = request.query_params.get("pageToken") or None
    if token is not None and len(token) > 512:
        raise invalid("pageToken", "is not a token this console gave")
    return token


def _models(request: Request) -> Any:
    models = main_state(request).models
    if models is None:
        raise MLEngineError(Code.UNAVAILABLE, "Online prediction is not enabled on this server")
    return models


@router.get("/projects/{project}/models")
async def models_list(project: str, request: Request) -> Response:
    result = await run_in_threadpool(_models(request).list_models, project, None, PAGE, _token(request))
    next_url = "?" + urlencode({"pageToken": result["nextPageToken"]}) if result.get("nextPageToken") else ""
    return render(request, "models.html", project=project, models=result.get("models", []), next_url=next_url)


@router.get("/projects/{project}/models/{model}")
async def model_page(project: str, model: str, request: Request) -> Response:
    service = _models(request)
    data = await run_in_threadpool(service.get_model, project, model)
    result = await run_in_threadpool(service.list_versions, project, model, None, PAGE, _token(request))
    next_url = "?" + urlencode({"pageToken": result["nextPageToken"]}) if result.get("nextPageToken") else ""
    return render(request, "model.html", project=project, model=data, model_id=model,
                  versions=result.get("versions", []), next_url=next_url)


def _operations_of(request: Request, project: str, target: str) -> list[dict[str, Any]]:
    runner = getattr(main_state(request), "operations", None)
    if runner is None:
        return []
    result = runner.list_operations(project, None, 100, None)
    return [op for op in result.get("operations", []) if f'"{target}"' in json.dumps(op)][:20]


def _monitoring(request: Request, project: str, model: str, version: str) -> dict[str, Any] | None:
    """Issue 12's monitoring of the version: its state, last run's findings, histograms and
    the skew distances over time; None where the server has no monitoring."""
    service = getattr(main_state(request), "monitoring", None)
    if service is None:
        return None
    try:
        described = service.describe(project, model, version)
        charts = service.histograms(project, model, version)
    except MLEngineError as err:
        return {"error": err.message}
    last = described.get("lastRun") or {}
    findings = [{**f, "section": section} for section in ("skew", "drift")
                for f in ((last.get(section) or {}).get("findings") or [])]
    return {"described": described, "findings": findings, "charts": script_json(charts)}


@router.get("/projects/{project}/models/{model}/versions/{version}")
async def version_page(project: str, model: str, version: str, request: Request) -> Response:
    data = await run_in_threadpool(_models(request).get_version, project, model, version)
    target = f"projects/{project}/models/{model}/versions/{version}"
    operations = await run_in_threadpool(_operations_of, request, project, target)
    monitoring = await run_in_threadpool(_monitoring, request, project, model, version)
    now = traffic.snapshot(project, model, version, getattr(main_state(request), "serving", None))
    totals = {"requests": int(now["requests"]), "errors": int(now["errors"]), "coldStarts": int(now["coldStarts"]),
              "replicas": now["replicas"],
              **{f"p{q}": traffic.percentile(now["buckets"], q / 100) for q in (50, 90, 99)}}
    return render(request, "version.html", project=project, model_id=model, version_id=version, version=data,
                  details=json.dumps(data, indent=2, sort_keys=True), operations=operations, monitoring=monitoring,
                  totals=totals)


@router.get("/projects/{project}/models/{model}/versions/{version}/traffic.json")
async def version_traffic(project: str, model: str, version: str, request: Request) -> Response:
    now = traffic.snapshot(project, model, version, getattr(main_state(request), "serving", None))
    return JSONResponse(now, headers={"cache-control": "no-store"})


@router.get("/projects/{project}/operations")
async def operations_list(project: str, request: Request) -> Response:
    runner = getattr(main_state(request), "operations", None)
    if runner is None:
        raise MLEngineError(Code.UNAVAILABLE, "Operations are not enabled on this server")
    result = await run_in_threadpool(runner.list_operations, project, None, PAGE, _token(request))
    next_url = "?" + urlencode({"pageToken": result["nextPageToken"]}) if result.get("nextPageToken") else ""
    return render(request, "operations.html", project=project, operations=result.get("operations", []),
                  next_url=next_url)
