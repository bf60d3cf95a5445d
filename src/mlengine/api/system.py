"""Server information, API tokens and package uploads (mlengine extensions)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

import mlengine
from mlengine.api.auth import ROLES
from mlengine.api.body import limited_chunks, read_json
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid

router = APIRouter()
PACKAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.(tar\.gz|tgz|zip|whl)$")


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return socket.gethostname()


@router.get("/v1/server")
async def server_info(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "version": mlengine.__version__,
        "executor": settings.executor,
        "capacitySlots": settings.effective_slots,
        "hostname": socket.gethostname(),
        "machineId": machine_id(),
        "home": str(settings.home),
        "pid": os.getpid(),
    }


@router.post("/v1/tokens")
async def create_token(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("token", "the body must be an object with name and role")
    name, role = body.get("name"), body.get("role", "viewer")
    if role not in ROLES:
        raise invalid("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(name, str):
        raise invalid("name", "is required")
    repo = request.app.state.token_repo
    row, secret = await run_in_threadpool(repo.create, name, role)
    request.app.state.tokens.refresh()
    return {"name": row.name, "role": row.role, "token": secret, "createTime": rfc3339(row.create_time)}


@router.get("/v1/tokens")
async def list_tokens(request: Request) -> dict[str, Any]:
    rows = await run_in_threadpool(request.app.state.token_repo.all)
    return {"tokens": [{"name": r.name, "role": r.role, "createTime": rfc3339(r.create_time)} for r in rows]}


@router.delete("/v1/tokens/{name}")
async def delete_token(name: str, request: Request) -> dict[str, Any]:
    if name == getattr(request.state, "principal", None):
        raise MLEngineError(Code.FAILED_PRECONDITION, "A token cannot revoke itself")
    await run_in_threadpool(request.app.state.token_repo.delete, name)
    request.app.state.tokens.refresh()
    return {}


@router.post("/v1/projects/{project}/packages:upload")
async def upload_package(project: str, request: Request, filename: str = "") -> dict[str, Any]:
    """Store a package sent by a client whose files the server cannot see; returns its URI."""
    from mlengine.core.packaging import validate_package_archive

    if not PACKAGE_NAME_RE.match(filename or ""):
        raise invalid("filename", f"{filename!r} must be a package file name ending in .tar.gz, .zip or .whl")
    settings = request.app.state.settings
    staging = settings.staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=staging, prefix=".upload-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in limited_chunks(request, settings.upload_max_bytes):
                sha.update(chunk)
                out.write(chunk)
        digest = sha.hexdigest()
        final_dir = staging / digest
        final_dir.mkdir(exist_ok=True)
        final = final_dir / filename
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        await run_in_threadpool(validate_package_archive, final)
    except MLEngineError:
        final.unlink(missing_ok=True)
        raise
    return {"uri": final.as_uri(), "sha256": digest}
