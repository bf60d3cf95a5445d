"""Authentication and authorization on every route: every route of the app against every
role (in process: the real app, fast) and tokens on a real server."""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.helpers import ServerProcess

from mlengine.api.app import create_app, iter_routes
from mlengine.api.auth import PERMISSIONS, PUBLIC
from mlengine.config import load_settings
from mlengine.core.iam import AUTHENTICATED, ROLES
from mlengine.testing.inprocess import InProcessServer

pytestmark = pytest.mark.e2e


class _NoTokens:
    def all(self) -> list:
        return []


def app_routes() -> list[tuple[str, str]]:
    return iter_routes(create_app(settings=None, job_service=None, token_repo=_NoTokens()))


def test_every_route_declares_a_permission() -> None:
    routes = app_routes()
    assert routes, "the app has no routes?"
    missing = [r for r in routes if r not in PERMISSIONS]
    assert not missing, f"routes without a permission in mlengine.api.auth.PERMISSIONS: {missing}"
    stale = [r for r in PERMISSIONS if r not in routes]
    assert not stale, f"permissions for routes that do not exist: {stale}"


#: The principals of the route test: a role on the server-wide policy (every project), or none.
PRINCIPALS = {"admin": "roles/ml.admin", "developer": "roles/ml.developer", "viewer": "roles/ml.viewer",
              "nobody": None}


@pytest.fixture(scope="module")
def inprocess() -> Iterator[tuple[InProcessServer, dict[str, str]]]:
    home = Path(tempfile.mkdtemp(prefix="mle-", dir="/tmp"))
    settings = load_settings(home=home, database_url=f"sqlite:///{home / 'mlengine.db'}", capacity_slots=1)
    try:
        with InProcessServer(settings, raise_server_exceptions=False) as server:
            tokens = {"admin": server.token}
            with server.client() as admin:
                for name, role in PRINCIPALS.items():
                    if name != "admin":
                        created = admin.request("POST", "/v1/tokens", json={"name": name, "role": role or "none"})
                        tokens[name] = created["token"]
            yield server, tokens
    finally:
        shutil.rmtree(home, ignore_errors=True)


def expected_allowed(permission: str, role: str | None) -> bool:
    return permission in (AUTHENTICATED, PUBLIC) or (role is not None and permission in ROLES[role])


def test_every_route_against_every_role(inprocess: tuple[InProcessServer, dict[str, str]]) -> None:
    """Each route, as each principal: 403 exactly when the role lacks the route's permission
    (derived from the role → permission table), and then the answer names both the permission
    and the resource."""
    server, tokens = inprocess
    routes = app_routes()
    checked = 0
    denials = dict.fromkeys(PRINCIPALS, 0)
    for name, role in PRINCIPALS.items():
        with server.client(tokens[name], retries=0) as client:
            http = client._http  # the raw answers, not the SDK's errors
            for method, path in routes:
                permission = PERMISSIONS[(method, path)]
                response = http.request(method, _concrete(path), json={})
                allowed = expected_allowed(permission, role)
                assert response.status_code != 401, (name, method, path, response.text)
                assert response.status_code < 500 or response.status_code in (501, 503), (
                    name, method, path, response.text)
                if allowed:
                    assert response.status_code != 403, (name, method, path, permission, response.text)
                else:
                    assert response.status_code == 403, (name, method, path, permission, response.text)
                    error = response.json()["error"]
                    assert error["status"] == "PERMISSION_DENIED", error
                    assert f"'{permission}'" in error["message"], error
                    resource = error["details"][0]["metadata"]["resource"]
                    assert resource in error["message"] and resource in ("server", *_resources(path)), error
                    denials[name] += 1
                checked += 1
    assert checked == len(routes) * len(PRINCIPALS)
    open_routes = sum(1 for route in routes if PERMISSIONS[route] in (AUTHENTICATED, PUBLIC))
    assert denials["admin"] == 0 and denials["nobody"] == len(routes) - open_routes
    assert 0 < denials["developer"] < denials["viewer"] < denials["nobody"], denials


def _resources(path: str) -> tuple[str, ...]:
    concrete = _concrete(path)
    return ("projects/x1", "projects/x1/jobs/x1", "projects/x1/models/x1") if "/projects/" in concrete else ()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_needs_a_token(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous, server.client as admin:
        for method, path in app_routes():
            url = _concrete(path)
            response = anonymous.request(method, url, json={})
            if PERMISSIONS[(method, path)] == PUBLIC:  # the health probes (api/health.py)
                assert response.status_code in (200, 503), (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.text)
            error = response.json()["error"]
            assert error["status"] == "UNAUTHENTICATED" and "bearer token" in error["message"]
            wrong = anonymous.request(method, url, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, (method, path)
            authed = admin.request(method, url, json={})
            assert authed.status_code not in (401, 403, 500), (method, path, authed.text)


def test_token_file_is_private_and_roles_are_enforced(server: ServerProcess) -> None:
    mode = stat.S_IMODE((server.home / "admin_token").stat().st_mode)
    assert mode == 0o600
    created = server.api("POST", "/v1/tokens", json={"name": "reader", "role": "viewer"})
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as viewer:
        assert viewer.get("/v1/projects/mlengine/jobs").status_code == 200
        denied = viewer.post("/v1/projects/mlengine/jobs", json={"jobId": "x"})
        assert denied.status_code == 403
        assert "ml.jobs.create" in denied.json()["error"]["message"]
        assert viewer.get("/v1/tokens").status_code == 403
    listed = server.api("GET", "/v1/tokens").json()["tokens"]
    assert {t["name"] for t in listed} >= {"admin", "reader"}
    assert all("token" not in t for t in listed)
    assert server.api("DELETE", "/v1/tokens/reader").status_code == 200
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as revoked:
        assert revoked.get("/v1/projects/mlengine/jobs").status_code == 401
    bad_role = server.api("POST", "/v1/tokens", json={"name": "r2", "role": "root"})
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]["message"]


def test_token_never_logged(server: ServerProcess) -> None:
    server.api("GET", "/v1/server")
    log = (server.home / "server-test.log").read_text()
    assert server.token not in log
