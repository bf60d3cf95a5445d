"""Models, a model's versions, a version, and operations."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlengine.console.jobs_pages import render
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


@router.get("/projects/{project}/models/{model}/versions/{version}")
async def version_page(project: str, model: str, version: str, request: Request) -> Response:
    data = await run_in_threadpool(_models(request).get_version, project, model, version)
    target = f"projects/{project}/models/{model}/versions/{version}"
    operations = await run_in_threadpool(_operations_of, request, project, target)
    return render(request, "version.html", project=project, model_id=model, version_id=version, version=data,
                  details=json.dumps(data, indent=2, sort_keys=True), operations=operations)


@router.get("/projects/{project}/operations")
async def operations_list(project: str, request: Request) -> Response:
    runner = getattr(main_state(request), "operations", None)
    if runner is None:
        raise MLEngineError(Code.UNAVAILABLE, "Operations are not enabled on this server")
    result = await run_in_threadpool(runner.list_operations, project, None, PAGE, _token(request))
    next_url = "?" + urlencode({"pageToken": result["nextPageToken"]}) if result.get("nextPageToken") else ""
    return render(request, "operations.html", project=project, operations=result.get("operations", []),
                  next_url=next_url)
