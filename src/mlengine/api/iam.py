"""IAM routes: ``getIamPolicy``, ``setIamPolicy`` and ``testIamPermissions`` on jobs and models
(ml v1), on projects and on the server (mlengine), and service accounts (mlengine).

Policies are :class:`mlengine.store.iam.PolicyStore`'s (``app.state.policies``); what they
mean is :mod:`mlengine.core.iam`'s. ``getIamPolicy`` answers ``GET`` (the discovery document's
method) and ``POST`` (Google's later form, with ``{"options": {"requestedPolicyVersion": N}}``).
``setIamPolicy`` replaces the bindings; an ``etag`` that is not the current one is 409
ABORTED; roles and members are checked (400 naming the field). ``testIamPermissions`` is open
to any valid token: it answers which of the given permissions the caller holds there.

Service accounts (``/v1/projects/{p}/serviceAccounts``) are the identities jobs run as:
``<accountId>@<project>.iam.mlengine``. Naming one in ``trainingInput.serviceAccount`` needs
``iam.serviceAccounts.actAs`` on the project (:func:`check_act_as`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.api.auth import denied
from mlengine.api.body import read_json
from mlengine.core import iam
from mlengine.core.iam import Binding
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid
from mlengine.store.iam import StoredPolicy

router = APIRouter()
JOB = "/v1/projects/{project}/jobs/{job}"
MODEL = "/v1/projects/{project}/models/{model}"
PROJECT = "/v1/projects/{project}"
SERVER = "/v1/server"
ACCOUNTS = "/v1/projects/{project}/serviceAccounts"
ACT_AS = "iam.serviceAccounts.actAs"
MAX_TESTED = 100
POLICY_FIELDS = ("bindings", "etag", "version", "auditConfigs")


# Requests --------------------------------------------------------------------------------------
def requested_version(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        version = int(value)
    except (TypeError, ValueError):
        raise invalid(field, f"{value!r} is not a policy version (0, 1 or 3)") from None
    if version not in (0, 1, 3):
        raise invalid(field, f"{version} is not a policy version (0, 1 or 3)")
    return version


def parse_set_request(body: Any) -> tuple[tuple[Binding, ...] | None, str | None]:
    """``(bindings or None to keep them, etag)`` of a ``SetIamPolicyRequest``."""
    if not isinstance(body, Mapping):
        raise invalid("policy", "the body must be a SetIamPolicyRequest: {\"policy\": {...}}")
    for key in body:
        if key not in ("policy", "updateMask"):
            raise invalid(key, f"unknown field {key!r} in SetIamPolicyRequest")
    policy = body.get("policy")
    if not isinstance(policy, Mapping):
        raise invalid("policy", "is required (an object with bindings and etag)")
    for key in policy:
        if key not in POLICY_FIELDS:
            raise invalid(f"policy.{key}", f"unknown field {key!r} in Policy")
    if policy.get("auditConfigs"):
        raise invalid("policy.auditConfigs", "audit logging configuration is not supported by mlengine")
    version = requested_version(policy.get("version"), "policy.version")
    bindings = iam.validate_bindings(policy.get("bindings"))
    if any(b.condition for b in bindings) and version != 3:
        raise invalid("policy.version", "must be 3 when a binding has a condition")
    etag = policy.get("etag")
    if etag is not None and not isinstance(etag, str):
        raise invalid("policy.etag", "must be a string (the etag getIamPolicy returned)")
    mask = [p.strip() for p in str(body.get("updateMask") or "").split(",") if p.strip()]
    for path in mask:
        if path not in ("bindings", "etag", "version"):
            raise invalid("updateMask", f"{path!r} cannot be set; bindings, etag or version")
    return (bindings if not mask or "bindings" in mask else None), etag or None


def _render(stored: StoredPolicy, version: int | None) -> dict[str, Any]:
    policy = stored.render()
    if version is not None and version < 3 and policy["version"] == 3:
        raise invalid("options.requestedPolicyVersion", "the policy has conditional bindings: request version 3")
    return policy


# Resources -------------------------------------------------------------------------------------
async def _existing(request: Request, resource: str) -> str:
    """``resource``, after checking the job or model exists (404 otherwise)."""
    parts = resource.split("/")
    state = request.app.state
    if len(parts) == 4 and parts[2] == "jobs" and getattr(state, "jobs", None) is not None:
        await run_in_threadpool(state.jobs.repo.get, parts[1], parts[3])
    elif len(parts) == 4 and parts[2] == "models" and getattr(state, "models", None) is not None:
        await run_in_threadpool(state.models.repo.get_model, parts[1], parts[3])
    return resource


async def get_policy(request: Request, resource: str, version: int | None) -> dict[str, Any]:
    await _existing(request, resource)
    return _render(request.app.state.policies.get(resource), version)


async def _post_version(request: Request) -> int | None:
    body = await read_json(request, required=False)
    if not isinstance(body, Mapping):
        raise invalid("options", "the body must be a GetIamPolicyRequest: {\"options\": {...}}")
    options = body.get("options") or {}
    if not isinstance(options, Mapping):
        raise invalid("options", "must be an object")
    return requested_version(options.get("requestedPolicyVersion"), "options.requestedPolicyVersion")


def _keeps_an_administrator(bindings: tuple[Binding, ...]) -> None:
    if not any("mlengine.server.setIamPolicy" in iam.role_permissions(b.role) and b.condition is None
               and any(m != iam.ALL_AUTHENTICATED for m in b.members) for b in bindings):
        raise MLEngineError(Code.FAILED_PRECONDITION, "The server policy must keep an unconditional "
                            "roles/ml.admin or roles/owner binding: nobody could change it again")


async def set_policy(request: Request, resource: str) -> dict[str, Any]:
    bindings, etag = parse_set_request(await read_json(request))
    await _existing(request, resource)
    policies = request.app.state.policies

    def replace(current: StoredPolicy) -> tuple[Binding, ...]:
        if etag and etag != current.etag:
            raise MLEngineError(Code.ABORTED, f"The etag {etag!r} does not match the current etag of the policy "
                                f"of {resource}: it was changed concurrently; read it again and retry")
        new = current.bindings if bindings is None else bindings
        if resource == iam.SERVER:
            _keeps_an_administrator(new)
        return new

    stored: StoredPolicy = await run_in_threadpool(policies.update, resource, replace)
    return stored.render()


async def held_permissions(request: Request, resource: str) -> dict[str, Any]:
    body = await read_json(request, required=False)
    if not isinstance(body, Mapping):
        raise invalid("permissions", "the body must be a TestIamPermissionsRequest: {\"permissions\": [...]}")
    asked = body.get("permissions") or []
    if not isinstance(asked, list) or len(asked) > MAX_TESTED:
        raise invalid("permissions", f"must be a list of at most {MAX_TESTED} permission names")
    for i, permission in enumerate(asked):
        if not isinstance(permission, str) or not permission:
            raise invalid(f"permissions[{i}]", "must be a permission name such as ml.jobs.cancel")
        if "*" in permission:
            raise invalid(f"permissions[{i}]", f"{permission!r}: wildcards are not allowed")
    held = request.app.state.iam.permissions(request.state.identity, resource)
    found = [p for p in dict.fromkeys(asked) if p in held]
    return {"permissions": found} if found else {}


def _query_version(request: Request) -> int | None:
    """``options.requestedPolicyVersion`` of a GET getIamPolicy."""
    return requested_version(request.query_params.get("options.requestedPolicyVersion"),
                             "options.requestedPolicyVersion")


# Routes: jobs and models (ml v1), projects and the server (mlengine) ---------------------------
@router.get(JOB + ":getIamPolicy")
async def get_job_policy(project: str, job: str, request: Request) -> dict[str, Any]:
    version = _query_version(request)
    return await get_policy(request, iam.job_resource(project, job), version)


@router.post(JOB + ":getIamPolicy")
async def post_job_policy(project: str, job: str, request: Request) -> dict[str, Any]:
    return await get_policy(request, iam.job_resource(project, job), await _post_version(request))


@router.post(JOB + ":setIamPolicy")
async def set_job_policy(project: str, job: str, request: Request) -> dict[str, Any]:
    return await set_policy(request, iam.job_resource(project, job))


@router.post(JOB + ":testIamPermissions")
async def job_permissions_tested(project: str, job: str, request: Request) -> dict[str, Any]:
    return await held_permissions(request, await _existing(request, iam.job_resource(project, job)))


@router.get(MODEL + ":getIamPolicy")
async def get_model_policy(project: str, model: str, request: Request) -> dict[str, Any]:
    version = _query_version(request)
    return await get_policy(request, iam.model_resource(project, model), version)


@router.post(MODEL + ":getIamPolicy")
async def post_model_policy(project: str, model: str, request: Request) -> dict[str, Any]:
    return await get_policy(request, iam.model_resource(project, model), await _post_version(request))


@router.post(MODEL + ":setIamPolicy")
async def set_model_policy(project: str, model: str, request: Request) -> dict[str, Any]:
    return await set_policy(request, iam.model_resource(project, model))


@router.post(MODEL + ":testIamPermissions")
async def model_permissions_tested(project: str, model: str, request: Request) -> dict[str, Any]:
    return await held_permissions(request, await _existing(request, iam.model_resource(project, model)))


@router.get(PROJECT + ":getIamPolicy")
async def get_project_policy(project: str, request: Request) -> dict[str, Any]:
    version = _query_version(request)
    return await get_policy(request, iam.project_resource(project), version)


@router.post(PROJECT + ":getIamPolicy")
async def post_project_policy(project: str, request: Request) -> dict[str, Any]:
    return await get_policy(request, iam.project_resource(project), await _post_version(request))


@router.post(PROJECT + ":setIamPolicy")
async def set_project_policy(project: str, request: Request) -> dict[str, Any]:
    return await set_policy(request, iam.project_resource(project))


@router.post(PROJECT + ":testIamPermissions")
async def project_permissions_tested(project: str, request: Request) -> dict[str, Any]:
    return await held_permissions(request, iam.project_resource(project))


@router.get(SERVER + ":getIamPolicy")
async def get_server_policy(request: Request) -> dict[str, Any]:
    version = _query_version(request)
    return await get_policy(request, iam.SERVER, version)


@router.post(SERVER + ":getIamPolicy")
async def post_server_policy(request: Request) -> dict[str, Any]:
    return await get_policy(request, iam.SERVER, await _post_version(request))


@router.post(SERVER + ":setIamPolicy")
async def set_server_policy(request: Request) -> dict[str, Any]:
    return await set_policy(request, iam.SERVER)


@router.post(SERVER + ":testIamPermissions")
async def server_permissions_tested(request: Request) -> dict[str, Any]:
    return await held_permissions(request, iam.SERVER)


# Service accounts ------------------------------------------------------------------------------
def render_account(row: Any) -> dict[str, Any]:
    email = iam.service_account_email(row.project, row.account_id)
    return {"name": f"projects/{row.project}/serviceAccounts/{email}", "projectId": row.project,
            "uniqueId": str(row.id), "email": email, "displayName": row.display_name,
            "createTime": rfc3339(row.create_time)}


def _accounts(request: Request) -> Any:
    accounts = getattr(request.app.state, "service_accounts", None)
    if accounts is None:
        raise MLEngineError(Code.UNAVAILABLE, "Service accounts are not enabled on this server.")
    return accounts


@router.post(ACCOUNTS)
async def create_account(project: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise invalid("accountId", "the body must be an object with accountId")
    account_id = body.get("accountId")
    if not isinstance(account_id, str) or not iam.ACCOUNT_ID_RE.match(account_id):
        raise invalid("accountId", f"{account_id!r}: a lowercase letter, then at most 62 lowercase letters, digits "
                                   "or hyphens")
    if account_id.startswith(iam.JOB_ACCOUNT_PREFIX):
        raise invalid("accountId", f"ids starting with {iam.JOB_ACCOUNT_PREFIX!r} are the server's (one per job)")
    details = body.get("serviceAccount") or {}
    display = details.get("displayName", "") if isinstance(details, Mapping) else ""
    if not isinstance(display, str) or len(display) > 100:
        raise invalid("serviceAccount.displayName", "must be a string of at most 100 characters")
    row = await run_in_threadpool(_accounts(request).create, project, account_id, display)
    return render_account(row)


@router.get(ACCOUNTS)
async def list_accounts(project: str, request: Request) -> dict[str, Any]:
    rows = await run_in_threadpool(_accounts(request).list, project)
    return {"accounts": [render_account(r) for r in rows]} if rows else {}


@router.get(ACCOUNTS + "/{account}")
async def get_account(project: str, account: str, request: Request) -> dict[str, Any]:
    return render_account(await run_in_threadpool(_accounts(request).get, project, account))


@router.delete(ACCOUNTS + "/{account}")
async def delete_account(project: str, account: str, request: Request) -> dict[str, Any]:
    """Delete the account and revoke its tokens (jobs already running as it keep theirs)."""
    await run_in_threadpool(_accounts(request).delete, project, account)
    member = "serviceAccount:" + iam.service_account_email(project, account)
    tokens = request.app.state.token_repo
    await run_in_threadpool(tokens.delete_for_principal, member)
    return {}


def _check_act_as(request: Request, project: str, email: Any, field: str) -> str:
    account_id, account_project = iam.parse_service_account(email, field)
    if account_project != project:
        raise invalid(field, f"{email} belongs to project {account_project}, not {project}")
    if account_id.startswith(iam.JOB_ACCOUNT_PREFIX):
        raise invalid(field, f"{email} is the account of another job; name an account of the project")
    try:
        _accounts(request).get(project, account_id)
    except MLEngineError as err:
        if err.code is Code.NOT_FOUND:
            raise invalid(field, f"there is no service account {email} in project {project} "
                                 f"(create it: POST {ACCOUNTS.format(project=project)})") from None
        raise
    if not request.app.state.iam.allows(request.state.identity, ACT_AS, iam.project_resource(project)):
        raise denied(ACT_AS, f"projects/{project}/serviceAccounts/{email}")
    return str(email)


async def check_act_as(request: Request, project: str, email: Any, field: str) -> str:
    """The service account ``email`` a job will run as, after checking it is an account of
    ``project`` and the caller may act as it (``iam.serviceAccounts.actAs`` on the project)."""
    return await run_in_threadpool(_check_act_as, request, project, email, field)
