"""Bearer-token authentication, IAM authorization, and the route → permission table.

Every route declares its permission in :data:`PERMISSIONS`, keyed by (method, path template).
A route missing from the table is refused with 500 at request time and caught by a test that
enumerates the app's routes. Tokens are looked up by SHA-256 digest, compared in constant
time, and never logged.

Authorization (:func:`authorize`, a dependency of every route): the token's principal (and
its groups) must hold the route's permission on the route's resource, resolved from the path
parameters (:func:`target_resource`): the job or model (a version → its model; an operation →
the resource it works on), else the project, else the server. What a principal holds there
is the union of the roles bound to it on the resource's chain (server, project, resource), as
:mod:`mlengine.core.iam` defines; policies live in memory (:class:`mlengine.store.iam.PolicyStore`)
and effective permissions are cached per (principal, resource) until a policy changes, so no
request (a prediction least of all) reads the database to be authorized. List routes check
the project: ``jobs.list`` needs ``ml.jobs.list`` on the project (or the server), not on jobs.

The web console (``/console``, :mod:`mlengine.console`) is a mounted app outside this table:
it authenticates a browser by its session cookie instead of a bearer header, and each of its
routes declares the API permission it needs in :data:`mlengine.console.routes.PERMISSIONS`,
checked with this module's :class:`Authorizer` on the same resources (a test enumerates its
routes as this table's test does).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from mlengine.core import iam
from mlengine.core.iam import AUTHENTICATED, Identity
from mlengine.errors import Code, MLEngineError
from mlengine.store.iam import PolicyStore
from mlengine.store.tokens import TokenRepository, digest

_JOB = "/v1/projects/{project}/jobs/{job}"
_MODEL = "/v1/projects/{project}/models/{model}"
_LOCATION = "/v1/projects/{project}/locations/{location}"
_STUDY = _LOCATION + "/studies/{study}"
_IAM_METHODS = {
    ("GET", ":getIamPolicy"): "getIamPolicy", ("POST", ":getIamPolicy"): "getIamPolicy",
    ("POST", ":setIamPolicy"): "setIamPolicy",
}


def _iam_routes(path: str, prefix: str) -> dict[tuple[str, str], str]:
    routes = {(method, path + suffix): f"{prefix}.{verb}" for (method, suffix), verb in _IAM_METHODS.items()}
    routes[("POST", path + ":testIamPermissions")] = AUTHENTICATED  # anyone may ask what they may do
    return routes


#: (HTTP method, path template) → permission. Names follow AI Platform's IAM permissions.
#: The permission of the routes that need no token (the server's liveness and readiness probes).
PUBLIC = "public"

PERMISSIONS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): "mlengine.metrics.get",  # also on MLE_METRICS_PORT without a token
    ("GET", "/v1/server"): AUTHENTICATED,  # version, executor, host: what clients adapt to
    **_iam_routes("/v1/server", "mlengine.server"),
    ("POST", "/v1/tokens"): "mlengine.tokens.create",
    ("GET", "/v1/tokens"): "mlengine.tokens.list",
    ("DELETE", "/v1/tokens/{name}"): "mlengine.tokens.delete",
    # Console users (name + password) are credentials like tokens: the same admin permissions.
    ("POST", "/v1/users"): "mlengine.tokens.create",
    ("GET", "/v1/users"): "mlengine.tokens.list",
    ("DELETE", "/v1/users/{name}"): "mlengine.tokens.delete",
    **_iam_routes("/v1/projects/{project}", "resourcemanager.projects"),
    ("POST", "/v1/projects/{project}/serviceAccounts"): "iam.serviceAccounts.create",
    ("GET", "/v1/projects/{project}/serviceAccounts"): "iam.serviceAccounts.list",
    ("GET", "/v1/projects/{project}/serviceAccounts/{account}"): "iam.serviceAccounts.get",
    ("DELETE", "/v1/projects/{project}/serviceAccounts/{account}"): "iam.serviceAccounts.delete",
    ("POST", "/v1/projects/{project}/packages:upload"): "ml.jobs.create",
    ("POST", "/v1/projects/{project}/jobs"): "ml.jobs.create",
    ("GET", "/v1/projects/{project}/jobs"): "ml.jobs.list",
    ("GET", _JOB): "ml.jobs.get",
    ("PATCH", _JOB): "ml.jobs.update",
    ("POST", _JOB + ":cancel"): "ml.jobs.cancel",
    ("GET", _JOB + "/logs"): "ml.jobs.get",
    **_iam_routes(_JOB, "ml.jobs"),
    ("POST", "/v1/projects/{project}/models"): "ml.models.create",
    ("GET", "/v1/projects/{project}/models"): "ml.models.list",
    ("GET", _MODEL): "ml.models.get",
    ("PATCH", _MODEL): "ml.models.update",
    ("DELETE", _MODEL): "ml.models.delete",
    ("GET", _MODEL + "/trafficStatus"): "ml.models.get",
    ("POST", _MODEL + ":predict"): "ml.models.predict",
    **_iam_routes(_MODEL, "ml.models"),
    ("POST", _MODEL + "/versions"): "ml.versions.create",
    ("GET", _MODEL + "/versions"): "ml.versions.list",
    ("GET", _MODEL + "/versions/{version}"): "ml.versions.get",
    ("PATCH", _MODEL + "/versions/{version}"): "ml.versions.update",
    ("DELETE", _MODEL + "/versions/{version}"): "ml.versions.delete",
    ("POST", _MODEL + "/versions/{version}:setDefault"): "ml.versions.update",
    ("POST", _MODEL + "/versions/{version}:predict"): "ml.models.predict",
    # Monitoring (mlengine): reading it is reading the version, running it is updating it.
    ("GET", _MODEL + "/versions/{version}/monitoring"): "ml.versions.get",
    ("POST", _MODEL + "/versions/{version}:runMonitoring"): "ml.versions.update",
    ("POST", _MODEL + "/versions/{version}/monitoring:computeBaseline"): "ml.versions.update",
    ("GET", _MODEL + "/versions/{version}/monitoringRuns"): "ml.versions.get",
    ("GET", _MODEL + "/versions/{version}/monitoringRuns/{run}"): "ml.versions.get",
    ("GET", _MODEL + "/versions/{version}/monitoring:histograms"): "ml.versions.get",
    ("GET", _MODEL + "/versions/{version}/monitoring:report"): "ml.versions.get",
    ("POST", _MODEL + "/versions/{version}/requestLogs:query"): "ml.versions.get",
    ("GET", "/v1/projects/{project}/operations"): "ml.operations.list",
    ("GET", "/v1/projects/{project}/operations/{operation}"): "ml.operations.get",
    ("POST", "/v1/projects/{project}/operations/{operation}:cancel"): "ml.operations.cancel",
    # projects.getConfig, projects.locations, and the Optimizer (Vizier): studies and trials.
    ("GET", "/v1/projects/{project}:getConfig"): "ml.projects.getConfig",
    ("GET", "/v1/projects/{project}/locations"): "ml.locations.list",
    ("GET", _LOCATION): "ml.locations.get",
    ("GET", _LOCATION + "/operations/{operation}"): "ml.operations.get",
    ("POST", _LOCATION + "/operations/{operation}:cancel"): "ml.operations.cancel",
    ("POST", _LOCATION + "/studies"): "ml.studies.create",
    ("GET", _LOCATION + "/studies"): "ml.studies.list",
    ("GET", _STUDY): "ml.studies.get",
    ("DELETE", _STUDY): "ml.studies.delete",
    ("POST", _STUDY + "/trials"): "ml.trials.create",
    ("GET", _STUDY + "/trials"): "ml.trials.list",
    ("POST", _STUDY + "/trials:suggest"): "ml.trials.create",
    ("POST", _STUDY + "/trials:listOptimalTrials"): "ml.trials.list",
    ("GET", _STUDY + "/trials/{trial}"): "ml.trials.get",
    ("DELETE", _STUDY + "/trials/{trial}"): "ml.trials.delete",
    **{("POST", _STUDY + "/trials/{trial}:" + verb): "ml.trials.update"
       for verb in ("addMeasurement", "checkEarlyStoppingState", "complete", "stop")},
    # Services (mlengine): managed long-running processes and their proxy (developers use it).
    ("POST", "/v1/projects/{project}/services"): "mlengine.services.create",
    ("GET", "/v1/projects/{project}/services"): "mlengine.services.list",
    ("GET", "/v1/projects/{project}/services/{name}"): "mlengine.services.get",
    ("DELETE", "/v1/projects/{project}/services/{name}"): "mlengine.services.delete",
    ("POST", "/v1/projects/{project}/services/{name}:start"): "mlengine.services.start",
    ("POST", "/v1/projects/{project}/services/{name}:stop"): "mlengine.services.stop",
    **{(method, "/v1/projects/{project}/services/{name}/proxy/{path:path}"): "mlengine.services.use"
       for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")},
    # Notebook instances (mlengine, api/notebooks.py): services of the notebook kind.
    ("POST", "/v1/projects/{project}/notebooks"): "mlengine.services.create",
    ("GET", "/v1/projects/{project}/notebooks"): "mlengine.services.list",
    ("GET", "/v1/projects/{project}/notebooks/{name}"): "mlengine.services.get",
    ("GET", "/v1/projects/{project}/notebooks/{name}/history"): "mlengine.services.get",
    ("DELETE", "/v1/projects/{project}/notebooks/{name}"): "mlengine.services.delete",
    ("POST", "/v1/projects/{project}/notebooks/{name}:start"): "mlengine.services.start",
    ("POST", "/v1/projects/{project}/notebooks/{name}:stop"): "mlengine.services.stop",
}
PREDICT_PERMISSION = "ml.models.predict"


class TokenCache:
    """In-memory copy of the token table (digest → :class:`~mlengine.core.iam.Identity`), read
    again whenever the repository changed it (API calls, the scheduler making or revoking a
    job's token), so the hot path never touches the database."""

    def __init__(self, repo: TokenRepository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._entries: list[tuple[str, Identity]] = []
        self._generation = -1
        self.refresh()

    def refresh(self) -> None:
        generation = getattr(self.repo, "generation", 0)
        entries = [(row.token_sha256, Identity(row.name, row.principal, tuple(row.groups or ()), row.job_pk))
                   for row in self.repo.all()]
        with self._lock:
            self._entries = entries
            self._generation = generation

    def named(self, name: str) -> Identity | None:
        """The identity of the token called ``name`` while it exists (a console session signed
        in with a token lives only as long as the token)."""
        if getattr(self.repo, "generation", 0) != self._generation:
            self.refresh()
        with self._lock:
            entries = self._entries
        return next((identity for _, identity in entries if identity.name == name), None)

    def lookup(self, token: str) -> Identity | None:
        if getattr(self.repo, "generation", 0) != self._generation:
            self.refresh()
        wanted = digest(token)
        found = None
        with self._lock:
            entries = self._entries
        for token_digest, identity in entries:
            if hmac.compare_digest(token_digest, wanted):
                found = identity
        return found


class Authorizer:
    """Effective permissions of principals on resources, cached until a policy changes (or a
    conditional binding that applied expires). Thread-safe; never touches the database."""

    MAX_ENTRIES = 50_000

    def __init__(self, policies: PolicyStore) -> None:
        self.policies = policies
        self._cache: dict[tuple[frozenset[str], str], tuple[int, float, frozenset[str]]] = {}

    def permissions(self, identity: Identity, resource: str) -> frozenset[str]:
        key = (identity.members, resource)
        generation = self.policies.generation
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == generation and now < hit[1]:
            return hit[2]
        granted, valid_until = iam.granted(identity.members, self.policies.bindings(iam.chain(resource)), now)
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (generation, valid_until, granted)
        return granted

    def allows(self, identity: Identity, permission: str, resource: str) -> bool:
        return permission == AUTHENTICATED or permission in self.permissions(identity, resource)

    def require(self, identity: Identity, permission: str, resource: str) -> None:
        """PERMISSION_DENIED (naming the permission and the resource) unless allowed."""
        if not self.allows(identity, permission, resource):
            raise denied(permission, resource)


def denied(permission: str, resource: str) -> MLEngineError:
    return MLEngineError(
        Code.PERMISSION_DENIED, f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                  "domain": "mlengine", "metadata": {"permission": permission, "resource": resource}}])


def route_permission(request: Request) -> str:
    route = request.scope.get("route")
    path = route.path if isinstance(route, Route) else request.url.path
    permission = PERMISSIONS.get((request.method, path))
    if permission is None:
        raise MLEngineError(Code.INTERNAL, f"Route {request.method} {path} declares no permission")
    return permission


def _operation_target(runner: Any, project: str, operation: str) -> str | None:
    try:
        return str(runner.repo.get(project, operation).target) or None
    except MLEngineError:
        return None  # no such operation: the handler answers 404 (if the project allows asking)


async def target_resource(request: Request) -> str:
    """The resource a request acts on, from its path parameters (see the module doc)."""
    params = request.path_params
    project = params.get("project")
    if isinstance(project, str) and "operation" in params and "job" not in params and "model" not in params:
        runner = getattr(request.app.state, "operations", None)
        target = None
        if runner is not None:
            target = await run_in_threadpool(_operation_target, runner, project, params["operation"])
        if target and target.startswith(iam.project_resource(project) + "/"):
            return "/".join(target.split("/")[:4])
        return iam.project_resource(project)
    return iam.path_resource(params)


async def authorize(request: Request) -> None:
    """FastAPI dependency applied to every route."""
    state = request.app.state
    permission = route_permission(request)
    if permission == PUBLIC:
        return
    identity = authenticate(state.tokens, request.headers.get("authorization", ""))
    request.state.identity = identity
    request.state.principal = identity.name
    if permission != AUTHENTICATED:
        state.iam.require(identity, permission, await target_resource(request))


def authenticate(tokens: TokenCache, authorization: str) -> Identity:
    """The :class:`~mlengine.core.iam.Identity` of the token a bearer ``Authorization`` header
    carries; UNAUTHENTICATED otherwise."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MLEngineError(
            Code.UNAUTHENTICATED,
            "Request is missing a valid bearer token (header 'Authorization: Bearer TOKEN'; "
            "get one with `mle auth print-access-token`).",
        )
    return lookup(tokens, token.strip())


def lookup(tokens: TokenCache, token: str) -> Identity:
    identity = tokens.lookup(token)
    if identity is None:
        raise MLEngineError(Code.UNAUTHENTICATED, "The bearer token is not valid (unknown or revoked).")
    return identity


def error_triple(error: MLEngineError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``(status, body, headers)`` of an error in the Google shape, for raw ASGI handlers."""
    extra = [(b"www-authenticate", b"Bearer")] if error.code is Code.UNAUTHENTICATED else []
    return error.code.http_status, json.dumps(error.to_dict()).encode(), extra


def authorize_predict(app: Any, authorization: bytes | None,
                      target: tuple[str, str, str | None]) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """The :data:`mlengine.prediction.router.Authorizer` of the predict routes:
    ``ml.models.predict`` on the model (memory only: token cache and permission cache)."""
    try:
        identity = authenticate(app.state.tokens, (authorization or b"").decode("latin-1"))
        app.state.iam.require(identity, PREDICT_PERMISSION, iam.model_resource(target[0], target[1]))
    except MLEngineError as error:
        return error_triple(error)
    return None


def authorize_proxy(app: Any, token: str, project: str, permission: str) -> MLEngineError | None:
    """The :data:`mlengine.services.proxy.Check` of the services proxy (a token from a header,
    cookie or query): ``permission`` on the project."""
    try:
        app.state.iam.require(lookup(app.state.tokens, token), permission, iam.project_resource(project))
    except MLEngineError as error:
        return error
    return None
