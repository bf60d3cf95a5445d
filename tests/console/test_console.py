"""The console over the real control plane in process: sign-in, sessions, CSRF and Origin
checks, roles, the route table, and pages answering 400 (not 500) to bad parameters."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from tests.inprocess import job_body

from mlengine.api.app import create_app, iter_routes
from mlengine.cli.main import cli
from mlengine.console.routes import PERMISSIONS, PUBLIC, SIGNED_IN
from mlengine.core import iam
from mlengine.store.console import hash_password, verify_password
from mlengine.testing.inprocess import InProcessServer

PASSWORD = "correct horse battery"


class _NoTokens:
    generation = 0

    def all(self) -> list[Any]:
        return []


def console_routes() -> set[tuple[str, str]]:
    app = create_app(settings=None, job_service=None, token_repo=_NoTokens())
    mount = next(r for r in app.routes if getattr(r, "path", "") == "/console")
    return set(iter_routes(mount.app))  # type: ignore[attr-defined]


def test_every_console_route_declares_a_permission() -> None:
    routes = console_routes()
    assert routes == set(PERMISSIONS), (routes - set(PERMISSIONS), set(PERMISSIONS) - routes)
    known = iam.PERMISSIONS | {PUBLIC, SIGNED_IN}
    assert all(p in known for p in PERMISSIONS.values())
    # only the sign-in page and our static files are open; no state change is public but sign-in
    assert {r for r, p in PERMISSIONS.items() if p == PUBLIC and r[0] == "POST"} == {("POST", "/signin")}


def test_passwords_are_salted_scrypt() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$") and PASSWORD not in first
    assert verify_password(PASSWORD, first) and not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "garbage")


class Browser:
    """An httpx client that keeps cookies and sends this server's Origin, like a browser."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, transport=server._transport(), follow_redirects=False)
        self.origin = server.url

    def csrf_of(self, html: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match, html[:500]
        return match.group(1)

    def sign_in(self, **fields: str) -> httpx.Response:
        page = self.http.get("/console/signin")
        data = {"csrf": self.csrf_of(page.text), "next": "/console/", **fields}
        return self.http.post("/console/signin", data=data, headers={"origin": self.origin})

    def post(self, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
        return self.http.post(path, data=data, headers={"origin": self.origin, **headers})


@pytest.fixture(scope="module")
def tokens(inprocess_server: InProcessServer) -> Iterator[dict[str, str]]:
    with inprocess_server.client(retries=0) as admin:
        yield {role: admin.create_token(f"console-{role}", role)["token"] for role in ("viewer", "editor")}


def test_sign_in_with_a_token_sets_a_strict_httponly_session(server: InProcessServer) -> None:
    browser = Browser(server)
    assert browser.http.get("/console/projects/mlengine/jobs").status_code == 303  # to the sign-in page
    wrong = browser.sign_in(token="mle_not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    response = browser.sign_in(token=server.token)
    assert response.status_code == 303
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("mle_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # plain http here; https sets Secure
    page = browser.http.get("/console/projects/mlengine/jobs")
    assert page.status_code == 200 and "<h1>Jobs" in page.text


def test_sign_in_needs_its_csrf_token_and_this_origin(server: InProcessServer) -> None:
    browser = Browser(server)
    browser.http.get("/console/signin")
    no_token = browser.post("/console/signin", {"token": server.token})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    page = browser.http.get("/console/signin")
    other = browser.post("/console/signin", {"csrf": browser.csrf_of(page.text), "token": server.token},
                         origin="http://localhost:9999")
    assert other.status_code == 403 and "Cross-origin" in other.text


def test_users_sign_in_with_a_password_and_are_admins_to_create(server: InProcessServer,
                                                               tokens: dict[str, str]) -> None:
    with server.client(retries=0) as admin:
        created = admin.request("POST", "/v1/users", json={"name": "ann", "password": PASSWORD, "role": "editor"})
        assert created["principal"] == "user:ann" and "roles/ml.developer" in created["roles"]
        bad = httpx.Client(base_url=server.url, transport=server._transport())
        short = bad.post("/v1/users", json={"name": "bob", "password": "short"},
                         headers={"authorization": f"Bearer {server.token}"})
        assert short.status_code == 400 and "password" in short.json()["error"]["message"]
        denied = bad.post("/v1/users", json={"name": "eve", "password": PASSWORD},
                          headers={"authorization": f"Bearer {tokens['editor']}"})
        assert denied.status_code == 403
    browser = Browser(server)
    assert browser.sign_in(username="ann", password="wrong password").status_code == 401
    assert browser.sign_in(username="nobody", password=PASSWORD).status_code == 401
    assert browser.sign_in(username="ann", password=PASSWORD).status_code == 303
    assert "ann" in browser.http.get("/console/projects/mlengine/jobs").text
    with server.client(retries=0) as admin:
        admin.request("DELETE", "/v1/users/ann")  # ends ann's sessions
    assert browser.http.get("/console/projects/mlengine/jobs").status_code == 303


def test_cli_creates_users_from_stdin(server: InProcessServer) -> None:
    result = CliRunner().invoke(cli, ["auth", "users", "create", "cli-user", "--role", "viewer", "--password-stdin"],
                                input=PASSWORD + "\n", env=server.client_env())
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(cli, ["auth", "users", "list", "--format", "value(name)"], env=server.client_env())
    assert "cli-user" in listed.output
    assert Browser(server).sign_in(username="cli-user", password=PASSWORD).status_code == 303


def test_revoking_the_token_ends_its_sessions(server: InProcessServer) -> None:
    with server.client(retries=0) as admin:
        secret = admin.create_token("short-lived", "viewer")["token"]
        browser = Browser(server)
        assert browser.sign_in(token=secret).status_code == 303
        assert browser.http.get("/console/projects/mlengine/jobs").status_code == 200
        admin.delete_token("short-lived")
    assert browser.http.get("/console/projects/mlengine/jobs").status_code == 303


def test_viewer_sees_no_cancel_and_is_refused(server: InProcessServer, tokens: dict[str, str], project: str,
                                              trainer_package: Any) -> None:
    with server.client(tokens["editor"], retries=0) as editor:
        editor.create_job(project, job_body("waits", trainer_package, "--sleep", "60"))
    viewer, owner = Browser(server), Browser(server)
    viewer.sign_in(token=tokens["viewer"])
    owner.sign_in(token=tokens["editor"])
    job_url = f"/console/projects/{project}/jobs/waits"
    viewer_page, owner_page = viewer.http.get(job_url), owner.http.get(job_url)
    assert viewer_page.status_code == owner_page.status_code == 200
    assert 'id="cancel"' not in viewer_page.text and 'id="cancel"' in owner_page.text
    refused = viewer.post(job_url + "/cancel", {"csrf": viewer.csrf_of(viewer_page.text)})
    assert refused.status_code == 403 and "ml.jobs.cancel" in refused.text
    no_csrf = owner.post(job_url + "/cancel", {})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    wrong_csrf = owner.post(job_url + "/cancel", {"csrf": viewer.csrf_of(viewer_page.text)})
    assert wrong_csrf.status_code == 403
    cross = owner.post(job_url + "/cancel", {"csrf": owner.csrf_of(owner_page.text)}, origin="http://evil.example")
    assert cross.status_code == 403  # the server's Host/Origin guard, before the console
    wrong_host = owner.post(job_url + "/cancel", {"csrf": owner.csrf_of(owner_page.text)}, host="evil.example")
    assert wrong_host.status_code == 403
    assert server.client().get_job(project, "waits")["state"] in ("QUEUED", "PREPARING", "RUNNING")
    done = owner.post(job_url + "/cancel", {"csrf": owner.csrf_of(owner_page.text)})
    assert done.status_code == 303
    assert server.client().get_job(project, "waits")["state"] in ("CANCELLING", "CANCELLED")
    logs = owner.http.get(job_url + "/logs.json")
    assert logs.status_code == 200 and "cursor" in logs.json()


@pytest.mark.parametrize(("query", "field"), [
    ("state=BOGUS", "state"), ("label=Bad%20Label", "label"), ("q=%22%29OR", "q"), ("pageSize=7", "pageSize"),
])
def test_bad_list_parameters_answer_400_naming_the_field(server: InProcessServer, query: str, field: str) -> None:
    browser = Browser(server)
    browser.sign_in(token=server.token)
    response = browser.http.get(f"/console/projects/mlengine/jobs?{query}")
    assert response.status_code == 400 and field in response.text


def test_pages_render_and_plotly_comes_from_its_wheel(server: InProcessServer) -> None:
    browser = Browser(server)
    browser.sign_in(token=server.token)
    for path in ("/console/projects/mlengine/models", "/console/projects/mlengine/operations"):
        assert browser.http.get(path).status_code == 200, path
    assert browser.http.get("/console/projects/mlengine/jobs/missing").status_code == 404
    plotly = browser.http.get("/console/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and b"plotly.js" in plotly.content[:2000]
    assert browser.http.get("/console/static/..%2Fapp.py").status_code == 404
    tracked = subprocess.run(["git", "ls-files", "*plotly*.js"], capture_output=True, text=True).stdout
    assert not tracked.strip()  # never a pasted copy in the repository


def test_embedded_data_cannot_close_its_script() -> None:
    import json

    from mlengine.console.jobs_pages import script_json

    hostile = {"opt": "</script><script>alert(1)</script>&"}
    embedded = script_json(hostile)
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded
    assert json.loads(embedded) == hostile


def test_security_headers(server: InProcessServer) -> None:
    browser = Browser(server)
    browser.sign_in(token=server.token)
    page = browser.http.get("/console/projects/mlengine/jobs")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


def test_jobs_list_filters_by_state_label_and_text(server: InProcessServer, project: str,
                                                   trainer_package: Any) -> None:
    from tests.inprocess import wait_for_job

    with server.client(retries=0) as api:
        api.create_job(project, {**job_body("alpha_run", trainer_package), "labels": {"team": "vision"}})
        api.create_job(project, {**job_body("beta_run", trainer_package, "--exit-code", "3"),
                                 "labels": {"team": "nlp"}})
        wait_for_job(api, project, "alpha_run")
        wait_for_job(api, project, "beta_run")
    browser = Browser(server)
    browser.sign_in(token=server.token)

    def listed(query: str) -> set[str]:
        page = browser.http.get(f"/console/projects/{project}/jobs?{query}")
        assert page.status_code == 200, page.text
        return set(re.findall(r'/jobs/([A-Za-z0-9_]+)">', page.text))

    assert listed("") == {"alpha_run", "beta_run"}
    assert listed("state=FAILED") == {"beta_run"}
    assert listed("label=team%3Dvision") == {"alpha_run"}
    assert listed("label=team") == {"alpha_run", "beta_run"}
    assert listed("q=beta") == {"beta_run"}
    assert listed("state=SUCCEEDED&q=beta") == set()
    first = browser.http.get(f"/console/projects/{project}/jobs?pageSize=25")
    assert "Next page" not in first.text
