"""``projects.models``, ``projects.models.versions`` and the predict routes.

Handlers validate and store through :class:`~mlengine.prediction.service.ModelService` (in a
thread: it blocks on the store), which tells the serving manager what changed
(:class:`~mlengine.prediction.events.ServingEvents`); the handlers never talk to the manager.
Their operations are served by :mod:`mlengine.api.operations`. Predict calls are answered by
:mod:`mlengine.prediction.router` (a plain ASGI handler; the routes here only declare them).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from mlengine.api.auth import authorize_predict
from mlengine.api.body import read_json
from mlengine.prediction.router import PredictEndpoint

router = APIRouter()
MODELS = "/v1/projects/{project}/models"
VERSIONS = MODELS + "/{model}/versions"

#: Raw ASGI routes of online prediction (see mlengine.prediction.router).
PREDICT_ROUTES = [
    Route(MODELS + "/{model}:predict", PredictEndpoint(authorize_predict), methods=["POST"]),
    Route(VERSIONS + "/{version}:predict", PredictEndpoint(authorize_predict), methods=["POST"]),
]


def _service(request: Request) -> Any:
    return request.app.state.models


# Models ----------------------------------------------------------------------------------------
@router.post(MODELS)
async def create_model(project: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    created: dict[str, Any] = await run_in_threadpool(_service(request).create_model, project, body,
                                                      request.state.identity.member)
    return created


@router.get(MODELS)
async def list_models(
    project: str, request: Request, filter: str | None = None,  # noqa: A002
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).list_models, project, filter, pageSize, pageToken)


@router.get(MODELS + "/{model}")
async def get_model(project: str, model: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).get_model, project, model)


@router.patch(MODELS + "/{model}")
async def patch_model(project: str, model: str, request: Request,
                      updateMask: str | None = None) -> dict[str, Any]:  # noqa: N803
    body = await read_json(request)
    return await run_in_threadpool(_service(request).patch_model, project, model, body, updateMask)


@router.get(MODELS + "/{model}/trafficStatus")
async def traffic_status(project: str, model: str, request: Request) -> dict[str, Any]:
    """mlengine extension: what the model's traffic policy measured since the server started
    (shadow versions' agreement and per-feature differences, the canary's windows)."""
    rendered = await run_in_threadpool(_service(request).get_model, project, model)  # 404 for an unknown model
    serving = getattr(request.app.state, "serving", None)
    measured = serving.traffic_status(project, model) if serving is not None else None
    return {"name": rendered["name"], **(measured or {"policy": "default"})}


@router.delete(MODELS + "/{model}")
async def delete_model(project: str, model: str, request: Request) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(_service(request).delete_model, project, model)
    return result


# Versions --------------------------------------------------------------------------------------
@router.post(VERSIONS)
async def create_version(project: str, model: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    operation: dict[str, Any] = await run_in_threadpool(_service(request).create_version, project, model, body)
    return operation


@router.get(VERSIONS)
async def list_versions(
    project: str, model: str, request: Request, filter: str | None = None,  # noqa: A002
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await run_in_threadpool(
        _service(request).list_versions, project, model, filter, pageSize, pageToken)


@router.get(VERSIONS + "/{version}")
async def get_version(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).get_version, project, model, version)


@router.patch(VERSIONS + "/{version}")
async def patch_version(project: str, model: str, version: str, request: Request,
                        updateMask: str | None = None) -> dict[str, Any]:  # noqa: N803
    body = await read_json(request)
    result: dict[str, Any] = await run_in_threadpool(
        _service(request).patch_version, project, model, version, body, updateMask)
    return result


@router.delete(VERSIONS + "/{version}")
async def delete_version(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(_service(request).delete_version, project, model, version)
    return result


@router.post(VERSIONS + "/{version}:setDefault")
async def set_default(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    result: dict[str, Any] = await run_in_threadpool(_service(request).set_default, project, model, version)
    return result
