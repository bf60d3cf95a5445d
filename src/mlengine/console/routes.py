"""The console's route → permission table and the guard every console route runs.

Paths are relative to the ``/console`` mount. A permission is an API permission checked on the
resource the path names (the job, the model, else the project), exactly as the API checks it;
:data:`PUBLIC` routes need no session (sign-in, our own static files), :data:`SIGNED_IN` any
session. Handlers that do more than their route's permission (deploying creates a model and
a version) check the extra permissions themselves.
"""

from __future__ import annotations

from fastapi import Request
from starlette.routing import Route

from mlengine.console.session import Viewer, check_state_change, current_viewer, main_state
from mlengine.core import iam
from mlengine.core.iam import AUTHENTICATED
from mlengine.errors import Code, MLEngineError

PUBLIC = "public"
SIGNED_IN = AUTHENTICATED

_P = "/projects/{project}"
_JOB = _P + "/jobs/{job}"
_MODEL = _P + "/models/{model}"

PERMISSIONS: dict[tuple[str, str], str] = {
    ("GET", "/signin"): PUBLIC,
    ("POST", "/signin"): PUBLIC,
    ("POST", "/signout"): SIGNED_IN,
    ("GET", "/static/vendor/plotly.min.js"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/"): SIGNED_IN,
    ("GET", _P + "/jobs"): "ml.jobs.list",
    ("GET", _JOB): "ml.jobs.get",
    ("GET", _JOB + "/logs.json"): "ml.jobs.get",
    ("GET", _JOB + "/trials"): "ml.jobs.get",
    ("POST", _JOB + "/cancel"): "ml.jobs.cancel",
    # starts (creating if needed) the job's TensorBoard service, then opens it through the proxy
    ("POST", _JOB + "/tensorboard"): "mlengine.services.use",
    ("GET", _JOB + "/deploy"): "ml.jobs.get",
    ("POST", _JOB + "/deploy"): "ml.jobs.get",  # + ml.models.create / ml.versions.create, checked inside
    ("GET", _P + "/models"): "ml.models.list",
    ("GET", _MODEL): "ml.models.get",
    ("GET", _MODEL + "/versions/{version}"): "ml.versions.get",
    ("GET", _MODEL + "/versions/{version}/traffic.json"): "ml.versions.get",
    ("GET", _P + "/operations"): "ml.operations.list",
    # a notebook instance's JupyterLab through the proxy with the session's token (issue 14)
    ("GET", _P + "/notebooks/{notebook}/open"): "mlengine.services.use",
}


class SignInRequired(Exception):
    """A page asked for without a session: the app redirects to the sign-in page."""


def resource_of(request: Request) -> str:
    return iam.path_resource(request.path_params)


def route_permission(request: Request) -> str:
    route = request.scope.get("route")
    path = route.path if isinstance(route, Route) else request.url.path
    permission = PERMISSIONS.get((request.method, path))
    if permission is None:
        raise MLEngineError(Code.INTERNAL, f"Console route {request.method} {path} declares no permission")
    return permission


async def guard(request: Request) -> None:
    """Dependency of every console route: session, permission, and for state changes the
    Origin and CSRF checks (the Host check is the server's HostGuard, before this)."""
    from mlengine.core.names import validate_path_segment

    permission = route_permission(request)
    for param, value in request.path_params.items():
        if isinstance(value, str) and param != "name":
            validate_path_segment(param, value)
    if permission == PUBLIC:
        return
    viewer = await current_viewer(request)
    if viewer is None:
        if request.method == "GET" and not request.url.path.endswith(".json"):
            raise SignInRequired()
        raise MLEngineError(Code.UNAUTHENTICATED, "Sign in to the console first (your session ended)")
    if request.method not in ("GET", "HEAD"):
        await check_state_change(request, viewer.csrf)
    request.state.viewer = viewer
    if permission != SIGNED_IN:
        main_state(request).iam.require(viewer.identity, permission, resource_of(request))


def can(request: Request, permission: str, resource: str) -> bool:
    """Whether the signed-in viewer holds ``permission`` on ``resource`` (to show a button)."""
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    return viewer is not None and bool(main_state(request).iam.allows(viewer.identity, permission, resource))
