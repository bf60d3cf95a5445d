"""Bearer-token authentication and the permission table.

Every route declares its permission in :data:`PERMISSIONS`, keyed by (method, path template).
A route missing from the table is refused with 500 at request time and caught by a test that
enumerates the app's routes. Tokens are looked up by SHA-256 digest, compared in constant
time, and never logged.
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

from fastapi import Request
from starlette.routing import Route

from mlengine.errors import Code, MLEngineError
from mlengine.store.tokens import TokenRepository, digest

ROLES = ("admin", "editor", "viewer")

#: (HTTP method, path template) → permission. Names follow AI Platform's IAM permissions.
PERMISSIONS: dict[tuple[str, str], str] = {
    ("GET", "/v1/server"): "mlengine.server.get",
    ("POST", "/v1/tokens"): "mlengine.tokens.create",
    ("GET", "/v1/tokens"): "mlengine.tokens.list",
    ("DELETE", "/v1/tokens/{name}"): "mlengine.tokens.delete",
    ("POST", "/v1/projects/{project}/packages:upload"): "ml.jobs.create",
    ("POST", "/v1/projects/{project}/jobs"): "ml.jobs.create",
    ("GET", "/v1/projects/{project}/jobs"): "ml.jobs.list",
    ("GET", "/v1/projects/{project}/jobs/{job}"): "ml.jobs.get",
    ("PATCH", "/v1/projects/{project}/jobs/{job}"): "ml.jobs.update",
    ("POST", "/v1/projects/{project}/jobs/{job}:cancel"): "ml.jobs.cancel",
    ("GET", "/v1/projects/{project}/jobs/{job}/logs"): "ml.jobs.get",
    ("POST", "/v1/projects/{project}/models"): "ml.models.create",
    ("GET", "/v1/projects/{project}/models"): "ml.models.list",
    ("GET", "/v1/projects/{project}/models/{model}"): "ml.models.get",
    ("PATCH", "/v1/projects/{project}/models/{model}"): "ml.models.update",
    ("DELETE", "/v1/projects/{project}/models/{model}"): "ml.models.delete",
    ("POST", "/v1/projects/{project}/models/{model}:predict"): "ml.models.predict",
    ("POST", "/v1/projects/{project}/models/{model}/versions"): "ml.versions.create",
    ("GET", "/v1/projects/{project}/models/{model}/versions"): "ml.versions.list",
    ("GET", "/v1/projects/{project}/models/{model}/versions/{version}"): "ml.versions.get",
    ("PATCH", "/v1/projects/{project}/models/{model}/versions/{version}"): "ml.versions.update",
    ("DELETE", "/v1/projects/{project}/models/{model}/versions/{version}"): "ml.versions.delete",
    ("POST", "/v1/projects/{project}/models/{model}/versions/{version}:setDefault"): "ml.versions.update",
    ("POST", "/v1/projects/{project}/models/{model}/versions/{version}:predict"): "ml.models.predict",
    ("GET", "/v1/projects/{project}/operations"): "ml.operations.list",
    ("GET", "/v1/projects/{project}/operations/{operation}"): "ml.operations.get",
    ("POST", "/v1/projects/{project}/operations/{operation}:cancel"): "ml.operations.cancel",
    # Services (mlengine): managed long-running processes and their proxy (editor to use it).
    ("POST", "/v1/projects/{project}/services"): "mlengine.services.create",
    ("GET", "/v1/projects/{project}/services"): "mlengine.services.list",
    ("GET", "/v1/projects/{project}/services/{name}"): "mlengine.services.get",
    ("DELETE", "/v1/projects/{project}/services/{name}"): "mlengine.services.delete",
    ("POST", "/v1/projects/{project}/services/{name}:start"): "mlengine.services.start",
    ("POST", "/v1/projects/{project}/services/{name}:stop"): "mlengine.services.stop",
    **{(method, "/v1/projects/{project}/services/{name}/proxy/{path:path}"): "mlengine.services.use"
       for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")},
}

READ_ONLY = frozenset(p for p in PERMISSIONS.values() if p.endswith((".get", ".list")))


def role_allows(role: str, permission: str) -> bool:
    if role == "admin":
        return True
    if role == "editor":
        return not permission.startswith("mlengine.tokens.")
    if role == "viewer":
        return permission in READ_ONLY and not permission.startswith("mlengine.tokens.")
    return False


class TokenCache:
    """In-memory copy of the token table (digest, name, role); refreshed on every change
    made through the API so the hot path never touches the database."""

    def __init__(self, repo: TokenRepository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._entries: list[tuple[str, str, str]] = []
        self.refresh()

    def refresh(self) -> None:
        entries = [(row.token_sha256, row.name, row.role) for row in self.repo.all()]
        with self._lock:
            self._entries = entries

    def lookup(self, token: str) -> tuple[str, str] | None:
        wanted = digest(token)
        found = None
        with self._lock:
            entries = self._entries
        for token_digest, name, role in entries:
            if hmac.compare_digest(token_digest, wanted):
                found = (name, role)
        return found


def route_permission(request: Request) -> str:
    route = request.scope.get("route")
    path = route.path if isinstance(route, Route) else request.url.path
    permission = PERMISSIONS.get((request.method, path))
    if permission is None:
        raise MLEngineError(Code.INTERNAL, f"Route {request.method} {path} declares no permission")
    return permission


async def authorize(request: Request) -> None:
    """FastAPI dependency applied to every route."""
    cache: TokenCache = request.app.state.tokens
    name, role = authenticate(cache, request.headers.get("authorization", ""))
    require(name, role, route_permission(request))
    request.state.principal = name


def authenticate(tokens: TokenCache, authorization: str) -> tuple[str, str]:
    """``(name, role)`` of the token a bearer ``Authorization`` header carries; UNAUTHENTICATED otherwise."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MLEngineError(
            Code.UNAUTHENTICATED,
            "Request is missing a valid bearer token (header 'Authorization: Bearer TOKEN'; "
            "get one with `mle auth print-access-token`).",
        )
    identity = tokens.lookup(token.strip())
    if identity is None:
        raise MLEngineError(Code.UNAUTHENTICATED, "The bearer token is not valid (unknown or revoked).")
    return identity


def require(name: str, role: str, permission: str) -> None:
    """PERMISSION_DENIED unless ``role`` has ``permission``."""
    if not role_allows(role, permission):
        raise MLEngineError(
            Code.PERMISSION_DENIED,
            f"Permission '{permission}' denied: token '{name}' has role '{role}'.",
        )


def error_triple(error: MLEngineError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``(status, body, headers)`` of an error in the Google shape, for raw ASGI handlers."""
    extra = [(b"www-authenticate", b"Bearer")] if error.code is Code.UNAUTHENTICATED else []
    return error.code.http_status, json.dumps(error.to_dict()).encode(), extra


PREDICT_PERMISSION = "ml.models.predict"


def authorize_predict(app: Any, authorization: bytes | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """The :data:`mlengine.prediction.router.Authorizer` of the predict routes."""
    try:
        require(*authenticate(app.state.tokens, (authorization or b"").decode("latin-1")), PREDICT_PERMISSION)
    except MLEngineError as error:
        return error_triple(error)
    return None
