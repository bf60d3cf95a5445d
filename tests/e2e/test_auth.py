"""Authentication and authorization on every route of a real server."""

from __future__ import annotations

import re
import stat

import httpx
import pytest
from tests.e2e.helpers import ServerProcess

from mlengine.api.app import create_app, iter_routes
from mlengine.api.auth import PERMISSIONS

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


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_needs_a_token(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous, server.client as admin:
        for method, path in app_routes():
            url = _concrete(path)
            response = anonymous.request(method, url, json={})
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
