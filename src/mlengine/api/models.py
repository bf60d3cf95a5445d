"""``projects.models``, ``projects.models.versions``, ``projects.operations`` and the predict routes.

Handlers validate and store through :class:`~mlengine.prediction.service.ModelService` (in a
thread: it blocks on the store) and then ask the serving manager to reconcile the model, which
starts or stops the actual work. Predict calls are answered by
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
OPERATIONS = "/v1/projects/{project}/operations"

#: Raw ASGI routes of online prediction (see mlengine.prediction.router).
PREDICT_ROUTES = [
    Route(MODELS + "/{model}:predict", PredictEndpoint(authorize_predict), methods=["POST"]),
    Route(VERSIONS + "/{version}:predict", PredictEndpoint(authorize_predict), methods=["POST"]),
]


def _service(request: Request) -> Any:
    return request.app.state.models


async def _reconcile(request: Request, project: str, model: str) -> None:
    manager = getattr(request.app.state, "serving", None)
    if manager is not None:
        await manager.reconcile_model(project, model)


# Models ----------------------------------------------------------------------------------------
@router.post(MODELS)
async def create_model(project: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    created: dict[str, Any] = await run_in_threadpool(_service(request).create_model, project, body)
    await _reconcile(request, project, created["name"].rsplit("/", 1)[-1])
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


@router.delete(MODELS + "/{model}")
async def delete_model(project: str, model: str, request: Request) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(_service(request).delete_model, project, model)
    await _reconcile(request, project, model)
    return result


# Versions --------------------------------------------------------------------------------------
@router.post(VERSIONS)
async def create_version(project: str, model: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    operation: dict[str, Any] = await run_in_threadpool(_service(request).create_version, project, model, body)
    await _reconcile(request, project, model)
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
    await _reconcile(request, project, model)
    return result


@router.delete(VERSIONS + "/{version}")
async def delete_version(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(_service(request).delete_version, project, model, version)
    await _reconcile(request, project, model)
    return result


@router.post(VERSIONS + "/{version}:setDefault")
async def set_default(project: str, model: str, version: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    result: dict[str, Any] = await run_in_threadpool(_service(request).set_default, project, model, version)
    await _reconcile(request, project, model)
    return result


# Operations ------------------------------------------------------------------------------------
@router.get(OPERATIONS)
async def list_operations(
    project: str, request: Request, filter: str | None = None,  # noqa: A002
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await run_in_threadpool(
        _service(request).list_operations, project, filter, pageSize, pageToken)


@router.get(OPERATIONS + "/{operation}")
async def get_operation(project: str, operation: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_service(request).get_operation, project, operation)


@router.post(OPERATIONS + "/{operation}:cancel")
async def cancel_operation(project: str, operation: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    row = await run_in_threadpool(_service(request).cancel_operation, project, operation)
    manager = getattr(request.app.state, "serving", None)
    if manager is not None:
        route = manager.routes.get((project, row.model_name))
        found = route.versions.get(row.version_name) if route else None
        if found is not None:
            manager.cancel_creation(found.pk)
    return {}
