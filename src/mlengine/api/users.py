"""Console users (mlengine): people who sign in to the web console with a name and a password.

An admin creates them (``mle auth users create``); like tokens, they are the server's
credentials, so the same admin permissions (``mlengine.tokens.*``) govern them. A user speaks
for ``user:NAME`` and its groups; ``role`` is bound on the server-wide policy as for tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.api.body import read_json
from mlengine.api.system import _token_role
from mlengine.core import iam
from mlengine.core.timeutil import rfc3339
from mlengine.errors import invalid
from mlengine.store.console import ConsoleUsers

router = APIRouter()
FIELDS = ("name", "password", "role", "groups")


def _users(request: Request) -> ConsoleUsers:
    return ConsoleUsers(request.app.state.token_repo.db)


def _render(request: Request, row: Any) -> dict[str, Any]:
    principal = f"user:{row.name}"
    bindings = request.app.state.policies.get(iam.SERVER).bindings
    out: dict[str, Any] = {"name": row.name, "principal": principal, "createTime": rfc3339(row.create_time)}
    roles = sorted({b.role for b in bindings if principal in b.members})
    if roles:
        out["roles"] = roles
    if row.groups:
        out["groups"] = list(row.groups)
    return out


@router.post("/v1/users")
async def create_user(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise invalid("user", "the body must be an object with name, password (and role, groups)")
    for key in body:
        if key not in FIELDS:
            raise invalid(key, f"unknown field {key!r} in a user")
    name, password, groups = body.get("name"), body.get("password"), body.get("groups") or []
    if not isinstance(name, str) or not name:
        raise invalid("name", "is required")
    if not isinstance(password, str):
        raise invalid("password", "is required (a string)")
    if not isinstance(groups, list) or len(groups) > 64:
        raise invalid("groups", "must be a list of at most 64 group names")
    for i, group in enumerate(groups):
        iam.validate_member(f"group:{group}" if isinstance(group, str) else group, f"groups[{i}]")
    principal = iam.validate_member(f"user:{name}", "name")
    role = _token_role(body, principal)
    row = await run_in_threadpool(_users(request).create, name, password, groups)
    if role is not None:
        await run_in_threadpool(request.app.state.policies.add_member, iam.SERVER, role, principal)
    return _render(request, row)


@router.get("/v1/users")
async def list_users(request: Request) -> dict[str, Any]:
    rows = await run_in_threadpool(_users(request).all)
    return {"users": [_render(request, r) for r in rows]}


@router.delete("/v1/users/{name}")
async def delete_user(name: str, request: Request) -> dict[str, Any]:
    """Delete a user and end their console sessions; their bindings stay (as a token's do)."""
    ended = await run_in_threadpool(_users(request).delete, name)
    repo = request.app.state.token_repo
    if any([await run_in_threadpool(repo.discard, f"console-session-{i}") for i in ended]):  # their proxy tokens
        request.app.state.tokens.refresh()
    return {}
