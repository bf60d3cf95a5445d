"""``projects.services`` (an mlengine extension): create, get, list, delete, ``:start``,
``:stop``, and the authenticated reverse proxy under ``.../services/{name}/proxy/``.

Handlers call the :class:`~mlengine.services.manager.ServiceManager` in a thread (it blocks on
the store). The proxy is a raw ASGI endpoint (:mod:`mlengine.services.proxy`): it streams, it
takes websockets, and it accepts a cookie besides the bearer header, so it does its own
authentication with the same token cache and IAM policies as every other route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route, WebSocketRoute

from mlengine.api.auth import authorize_proxy
from mlengine.api.body import read_json
from mlengine.errors import Code, MLEngineError
from mlengine.services.proxy import METHODS, ProxyEndpoint
from mlengine.services.resource import render

router = APIRouter()
SERVICES = "/v1/projects/{project}/services"
SERVICE = SERVICES + "/{name}"
PROXY = SERVICE + "/proxy/{path:path}"

_proxy = ProxyEndpoint(authorize_proxy)
#: Raw ASGI routes of the proxy: every method, and websockets on the same paths.
PROXY_ROUTES = [Route(PROXY, _proxy, methods=list(METHODS)), WebSocketRoute(PROXY, _proxy)]


def _manager(request: Request) -> Any:
    manager = getattr(request.app.state, "services", None)
    if manager is None:
        raise MLEngineError(Code.UNAVAILABLE, "Services are not enabled on this server.")
    return manager


@router.post(SERVICES)
async def create_service(project: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    row = await run_in_threadpool(_manager(request).create, project, body)
    return render(row)


@router.get(SERVICES)
async def list_services(
    project: str, request: Request,
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    rows, token = await run_in_threadpool(_manager(request).list, project, pageSize, pageToken)
    out: dict[str, Any] = {"services": [render(r) for r in rows]}
    if token:
        out["nextPageToken"] = token
    return out


@router.get(SERVICE)
async def get_service(project: str, name: str, request: Request) -> dict[str, Any]:
    return render(await run_in_threadpool(_manager(request).get, project, name))


@router.delete(SERVICE)
async def delete_service(project: str, name: str, request: Request) -> dict[str, Any]:
    await run_in_threadpool(_manager(request).delete, project, name)
    return {}


@router.post(SERVICE + ":start")
async def start_service(project: str, name: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return render(await run_in_threadpool(_manager(request).start_service, project, name))


@router.post(SERVICE + ":stop")
async def stop_service(project: str, name: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return render(await run_in_threadpool(_manager(request).stop_service, project, name))
