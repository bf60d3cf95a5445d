"""Server information, API tokens and package uploads (mlengine extensions)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

import mlengine
from mlengine.api.body import limited_chunks, read_json
from mlengine.core import iam
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid

router = APIRouter()
#: The roles of tokens before IAM, accepted by ``POST /v1/tokens`` (see core.iam.LEGACY_ROLES).
ROLES = tuple(iam.LEGACY_ROLES)
BASIC = {"admin": "roles/owner", "editor": "roles/editor", "viewer": "roles/viewer"}
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


def _server_roles(request: Request, principal: str) -> list[str]:
    """The roles ``principal`` holds on the server-wide policy (what legacy roles became)."""
    bindings = request.app.state.policies.get(iam.SERVER).bindings
    return sorted({b.role for b in bindings if principal in b.members})


def _token_principal(request: Request, body: Mapping[str, Any], name: str) -> tuple[str, list[str]]:
    account = body.get("serviceAccount")
    groups = body.get("groups") or []
    if not isinstance(groups, list) or len(groups) > 64:
        raise invalid("groups", "must be a list of at most 64 group names")
    for i, group in enumerate(groups):
        iam.validate_member(f"group:{group}" if isinstance(group, str) else group, f"groups[{i}]")
    if account is not None:
        if "user" in body:
            raise invalid("serviceAccount", "a token speaks for a user or a service account, not both")
        account_id, project = iam.parse_service_account(account, "serviceAccount")
        if account_id.startswith(iam.JOB_ACCOUNT_PREFIX):
            raise invalid("serviceAccount", f"{account} is a job's account: its tokens are the server's")
        accounts = request.app.state.service_accounts
        try:
            accounts.get(project, account_id)
        except MLEngineError as err:
            if err.code is Code.NOT_FOUND:
                raise invalid("serviceAccount", f"there is no service account {account}") from None
            raise
        return f"serviceAccount:{account}", list(groups)
    user = body.get("user", name)
    return iam.validate_member(f"user:{user}" if isinstance(user, str) else user, "user"), list(groups)


def _token_role(body: Mapping[str, Any], principal: str) -> str | None:
    """The role to bind on the server policy: ``role`` (legacy admin/editor/viewer or a
    ``roles/...`` name; ``none`` for no binding); by default viewer for users, none for accounts."""
    role = body.get("role", "none" if principal.startswith("serviceAccount:") else "viewer")
    if role == "none":
        return None
    if not isinstance(role, str) or (role not in ROLES and role not in iam.ROLES):
        raise invalid("role", f"must be one of {', '.join(ROLES)}, none, or a role "
                              f"({', '.join(sorted(iam.ROLES))}), got {role!r}")
    return iam.LEGACY_ROLES.get(role, role)


def _render_token(request: Request, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row.name, "principal": row.principal, "createTime": rfc3339(row.create_time)}
    if row.groups:
        out["groups"] = list(row.groups)
    roles = _server_roles(request, row.principal)
    if roles:
        out["roles"] = roles
        legacy = [name for name, role in iam.LEGACY_ROLES.items() if role in roles or BASIC[name] in roles]
        if legacy:
            out["role"] = legacy[0]  # the strongest, as tokens had before IAM
    if row.job_pk is not None:
        out["job"] = True
    return out


@router.post("/v1/tokens")
async def create_token(request: Request) -> dict[str, Any]:
    """Create a token for a user (``user``, default its ``name``) or a service account
    (``serviceAccount``), in ``groups``; ``role`` is bound on the server-wide policy."""
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise invalid("token", "the body must be an object with name (and role, user, groups, serviceAccount)")
    for key in body:
        if key not in ("name", "role", "user", "groups", "serviceAccount"):
            raise invalid(key, f"unknown field {key!r} in a token")
    name = body.get("name")
    if not isinstance(name, str):
        raise invalid("name", "is required")
    principal, groups = await run_in_threadpool(_token_principal, request, body, name)
    role = _token_role(body, principal)
    repo = request.app.state.token_repo
    row, secret = await run_in_threadpool(repo.create, name, principal, groups)
    if role is not None:
        await run_in_threadpool(request.app.state.policies.add_member, iam.SERVER, role, principal)
    request.app.state.tokens.refresh()
    return {**_render_token(request, row), "token": secret}


@router.get("/v1/tokens")
async def list_tokens(request: Request) -> dict[str, Any]:
    rows = await run_in_threadpool(request.app.state.token_repo.all)
    return {"tokens": [_render_token(request, r) for r in rows]}


@router.delete("/v1/tokens/{name}")
async def delete_token(name: str, request: Request) -> dict[str, Any]:
    """Revoke a token. The principal's bindings stay (another token of it keeps them)."""
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
