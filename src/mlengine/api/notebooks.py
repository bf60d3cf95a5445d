"""Notebook instances (an mlengine extension, ``mle notebooks``): JupyterLab servers run as
services of the ``notebook`` kind (:mod:`mlengine.services.kinds.notebook`), one per instance.

Routes (mlengine's own, beside ``services``; docs/notebooks.md): ``POST/GET
/v1/projects/{p}/notebooks``, ``GET/DELETE .../notebooks/{name}`` (``?deleteDisk=true`` also
removes its files), ``POST .../{name}:start|:stop``, ``GET .../{name}/history`` (its git log).
Permissions are the services' (a notebook is a service): developers create and use them.

On create, the caller becomes the instance's owner: a token is minted for the caller's
principal and groups (so kernels act with the owner's role, never the server's admin token),
written into the service's directory for the kind to hand to kernels, and deleted with it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from mlengine.api.body import read_json
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid, not_found
from mlengine.services import states as st
from mlengine.services._base import proxy_prefix
from mlengine.services.kinds import notebook as kind
from mlengine.services.resource import service_short_name

router = APIRouter()
NOTEBOOKS = "/v1/projects/{project}/notebooks"
NOTEBOOK = NOTEBOOKS + "/{name}"
CREATE_FIELDS = ("name", "idleTimeout", "gitRemote")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _manager(request: Request) -> Any:
    manager = getattr(request.app.state, "services", None)
    if manager is None or manager.kinds.get(kind.NotebookKind.name) is None:
        raise MLEngineError(Code.UNAVAILABLE, "Notebooks are not enabled on this server (no notebook service kind).")
    return manager


def token_name(project: str, name: str) -> str:
    return kind.owner_token_name(project, name)  # the kind revokes it when the service is deleted


def idle_seconds(value: Any) -> float:
    """``idleTimeout`` as seconds: a Duration (``"5400s"``) or a number; 0 means never."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        seconds = float(value.strip()[:-1])
    else:
        raise invalid("idleTimeout", f"must be a duration in seconds like '5400s', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise invalid("idleTimeout", "must be >= 0s (0s: never stop when idle)")
    return seconds


def render(row: Any, settings: Any) -> dict[str, Any]:
    spec = row.spec or {}
    out: dict[str, Any] = {
        "name": f"projects/{row.project}/notebooks/{row.name}",
        "state": row.state,
        "owner": spec.get("owner", ""),
        "idleTimeout": f"{float(spec.get('idleTimeoutSeconds', 0)):g}s",
        "proxyUrl": proxy_prefix(row.project, row.name) + "lab",
        "createTime": rfc3339(row.create_time),
        "diskPath": str(kind.disk_dir(settings, row.project, row.name)),
    }
    if spec.get("gitRemote"):
        out["gitRemote"] = spec["gitRemote"]
    if row.state == st.STOPPED and row.stop_reason:
        out["stopReason"] = row.stop_reason
    if row.error:
        out["errorMessage"] = row.error
    if row.last_activity_time is not None:
        out["lastActivityTime"] = rfc3339(row.last_activity_time)
    return out


def _notebook_row(manager: Any, project: str, name: str) -> Any:
    row = manager.get(project, name)
    if row.kind != kind.NotebookKind.name:
        raise not_found(f"Notebook projects/{project}/notebooks/{name}")
    return row


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _api_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _create(request: Request, project: str, body: Any) -> Any:
    manager = _manager(request)
    if not isinstance(body, dict):
        raise invalid("notebook", "the body must be an object with name, idleTimeout and gitRemote")
    unknown = sorted(set(body) - set(CREATE_FIELDS))
    if unknown:
        raise invalid(unknown[0], f"unknown field; a notebook is created with {', '.join(CREATE_FIELDS)}")
    name = service_short_name(body.get("name"))
    spec: dict[str, Any] = {"idleTimeoutSeconds": idle_seconds(body.get("idleTimeout", kind.DEFAULT_IDLE_SECONDS))}
    if body.get("gitRemote") is not None:
        spec["gitRemote"] = body["gitRemote"]
    identity = request.state.identity
    spec["owner"] = identity.member
    manager.kinds.require(kind.NotebookKind.name).validate(spec)  # 400s before anything is written
    try:
        manager.get(project, name)
    except MLEngineError as error:
        if error.code is not Code.NOT_FOUND:
            raise
    else:
        raise MLEngineError(Code.ALREADY_EXISTS, f"Service projects/{project}/services/{name} already exists.")
    tokens = request.app.state.token_repo
    directory = manager.directory(project, name)
    tokens.discard(token_name(project, name))
    _row, secret = tokens.create(token_name(project, name), identity.member, identity.groups)
    _write_private(directory / kind.TOKEN_FILE, secret)
    _write_private(directory / kind.URL_FILE, _api_url(request))
    try:
        return manager.create(project, {"name": name, "kind": kind.NotebookKind.name, "spec": spec})
    except BaseException:
        tokens.discard(token_name(project, name))
        raise


@router.post(NOTEBOOKS)
async def create_notebook(project: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    row = await run_in_threadpool(_create, request, project, body)
    return render(row, request.app.state.settings)


@router.get(NOTEBOOKS)
async def list_notebooks(project: str, request: Request) -> dict[str, Any]:
    manager = _manager(request)
    rows = await run_in_threadpool(manager.repo.all)
    mine = sorted((r for r in rows if r.project == project and r.kind == kind.NotebookKind.name), key=lambda r: r.name)
    return {"notebooks": [render(r, request.app.state.settings) for r in mine]}


@router.get(NOTEBOOK)
async def get_notebook(project: str, name: str, request: Request) -> dict[str, Any]:
    row = await run_in_threadpool(_notebook_row, _manager(request), project, name)
    return render(row, request.app.state.settings)


def _delete(request: Request, project: str, name: str, delete_disk: bool) -> None:
    manager = _manager(request)
    _notebook_row(manager, project, name)
    manager.delete(project, name)
    request.app.state.token_repo.discard(token_name(project, name))
    if delete_disk:
        shutil.rmtree(kind.disk_dir(request.app.state.settings, project, name), ignore_errors=True)


@router.delete(NOTEBOOK)
async def delete_notebook(project: str, name: str, request: Request,
                          deleteDisk: bool = Query(default=False)) -> dict[str, Any]:  # noqa: N803
    await run_in_threadpool(_delete, request, project, name, deleteDisk)
    return {}


def _start(request: Request, project: str, name: str) -> Any:
    manager = _manager(request)
    _notebook_row(manager, project, name)
    _write_private(manager.directory(project, name) / kind.URL_FILE, _api_url(request))
    return manager.start_service(project, name)


@router.post(NOTEBOOK + ":start")
async def start_notebook(project: str, name: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return render(await run_in_threadpool(_start, request, project, name), request.app.state.settings)


def _stop(request: Request, project: str, name: str) -> Any:
    manager = _manager(request)
    _notebook_row(manager, project, name)
    return manager.stop_service(project, name)


@router.post(NOTEBOOK + ":stop")
async def stop_notebook(project: str, name: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return render(await run_in_threadpool(_stop, request, project, name), request.app.state.settings)


def _history(request: Request, project: str, name: str, limit: int) -> list[dict[str, str]]:
    manager = _manager(request)
    _notebook_row(manager, project, name)
    return kind.history(request.app.state.settings, manager.directory(project, name), project, name, limit)


@router.get(NOTEBOOK + "/history")
async def notebook_history(project: str, name: str, request: Request,
                           pageSize: int | None = Query(default=None)) -> dict[str, Any]:  # noqa: N803
    if pageSize is not None and not 0 < pageSize <= 1000:
        raise invalid("pageSize", "must be between 1 and 1000")
    commits = await run_in_threadpool(_history, request, project, name, pageSize or 100)
    return {"commits": commits}
