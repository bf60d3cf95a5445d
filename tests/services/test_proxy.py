"""The services REST routes and the proxy, in process (the real app in Starlette's TestClient)
in front of real toy service processes."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.services.toy_kind import KEY_FILE, ToyKind

from mlengine.services import states as st
from mlengine.services._base import UPSTREAM_KEY_HEADER
from mlengine.store.tokens import TokenRepository
from mlengine.testing.services import PROJECT, ServiceHarness, service_harness

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient, WebSocketDenialResponse

SERVICES = f"/v1/projects/{PROJECT}/services"


@pytest.fixture(scope="module")
def h() -> Iterator[ServiceHarness]:
    with service_harness(ToyKind) as harness:
        created = harness.api("POST", SERVICES, json={"name": "web", "kind": "toy"})
        assert created.status_code == 200, created.text
        harness.wait_state("web", (st.RUNNING,), 20)
        yield harness


def proxy(name: str = "web") -> str:
    return f"{SERVICES}/{name}/proxy/"


def headers_of(echo: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in echo["headers"]}


def test_http_is_forwarded_with_forwarded_headers_and_without_the_token(h: ServiceHarness) -> None:
    response = h.api("GET", proxy() + "a%2Fb/c?x=1&y=%2F", headers={"X-Forwarded-For": "10.0.0.1"})
    assert response.status_code == 200, response.text
    echo = response.json()
    assert echo["method"] == "GET" and echo["query"] == "x=1&y=%2F"
    assert echo["rawPath"] == proxy() + "a%2Fb/c"
    seen = headers_of(echo)
    assert "authorization" not in seen
    assert seen["host"] == "testserver" and seen["x-forwarded-host"] == "testserver"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-prefix"] == proxy().rstrip("/")
    assert seen["x-forwarded-for"].startswith("10.0.0.1, ")
    assert response.cookies.get("toy") == "1"
    assert all("mle_token" not in c for c in response.headers.get_list("set-cookie"))


def test_bodies_stream_both_ways_and_methods_pass(h: ServiceHarness) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = h.api(method, proxy() + "upload", content=chunks() if method != "DELETE" else b"")
        assert response.status_code == 200, (method, response.text)
        echo = response.json()
        assert echo["method"] == method
        if method != "DELETE":
            assert echo["bodySize"] == len(body) and echo["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert h.api("OPTIONS", proxy()).status_code == 200
    assert h.api("HEAD", proxy()).status_code == 200


def test_redirects_to_the_service_itself_become_relative(h: ServiceHarness) -> None:
    response = h.api("GET", proxy() + "redirect", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == proxy() + "echo"


def test_refusals(h: ServiceHarness) -> None:
    anonymous = h.client.get(proxy())
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "bearer token" in anonymous.json()["error"]["message"]
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert h.client.get(proxy(), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert h.client.get(proxy(), headers={"Cookie": "mle_token=nope"}).status_code == 401
    _row, reader = TokenRepository(h.context.db).create("reader")
    h.client.app.state.policies.add_member("server", "roles/ml.viewer", "user:reader")
    h.client.app.state.tokens.refresh()
    as_viewer = {"Authorization": f"Bearer {reader}"}
    denied = h.client.get(proxy(), headers=as_viewer)
    assert denied.status_code == 403 and "mlengine.services.use" in denied.json()["error"]["message"]
    assert h.client.get(f"{SERVICES}/web", headers=as_viewer).status_code == 200
    assert h.client.get(SERVICES, headers=as_viewer).status_code == 200
    assert h.client.post(f"{SERVICES}/web:stop", headers=as_viewer).status_code == 403
    unknown = h.api("GET", proxy("nope"))
    assert unknown.status_code == 404 and "services/nope" in unknown.json()["error"]["message"]


def test_a_browser_gets_a_cookie_from_access_token(h: ServiceHarness) -> None:
    with TestClient(h.client.app) as browser:
        first = browser.get(proxy() + "page?access_token=" + h.token + "&x=1", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == proxy() + "page?x=1"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("mle_token=" + h.token)
        assert f"Path={proxy()}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        second = browser.get(first.headers["location"])
        assert second.status_code == 200, second.text
        seen = headers_of(second.json())
        assert "mle_token" not in seen.get("cookie", "") and "authorization" not in seen
        with browser.websocket_connect(proxy() + "ws") as ws:  # the cookie opens websockets too
            ws.send_text("from a browser")
            assert ws.receive_text() == "echo:from a browser"
    stale = {"Cookie": "mle_token=revoked"}  # a fresh link wins over a stale cookie
    fresh = h.client.get(proxy() + "?access_token=" + h.token, headers=stale, follow_redirects=False)
    assert fresh.status_code == 303 and fresh.headers["location"] == proxy()
    h.client.cookies.clear()


def test_websockets_are_relayed(h: ServiceHarness) -> None:
    with h.client.websocket_connect(proxy() + "ws", headers=h.auth, subprotocols=["v1.kernel"]) as ws:
        assert ws.accepted_subprotocol == "v1.kernel"
        ws.send_text("hello")
        assert ws.receive_text() == "echo:hello"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes() == b"\x00\x01"
    with pytest.raises(WebSocketDenialResponse) as info, h.client.websocket_connect(proxy() + "ws"):
        pass
    assert info.value.status_code == 401


def test_only_the_proxy_knows_the_upstream_key(h: ServiceHarness) -> None:
    """The proxy replaces a client's upstream key with the service's own, for HTTP and
    websockets; connecting to the port directly without it is refused."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    key = (h.manager.directory(PROJECT, "web") / KEY_FILE).read_text()
    forged = {UPSTREAM_KEY_HEADER: "forged"}
    echo = h.api("GET", proxy() + "echo", headers=forged).json()
    assert [v for k, v in echo["headers"] if k == UPSTREAM_KEY_HEADER.lower()] == [key]
    with h.client.websocket_connect(proxy() + "ws", headers={**h.auth, **forged}) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo:hi"

    port = int(h.handle("web")["port"])
    assert httpx.get(f"http://127.0.0.1:{port}{proxy()}echo", headers=forged, trust_env=False).status_code == 403

    async def direct_websocket() -> str:
        try:
            async with connect(f"ws://127.0.0.1:{port}{proxy()}ws", additional_headers=forged, proxy=None) as ws:
                await ws.send("hi")
                return str(await ws.recv())
        except (ConnectionClosed, InvalidStatus) as refused:
            return type(refused).__name__

    assert asyncio.run(direct_websocket()) in ("ConnectionClosedError", "ConnectionClosedOK", "InvalidStatus")


def test_rest_resource_and_lifecycle(h: ServiceHarness) -> None:
    got = h.api("GET", f"{SERVICES}/web").json()
    assert got["name"] == f"projects/{PROJECT}/services/web" and got["kind"] == "toy"
    assert got["state"] == st.RUNNING and got["proxyUrl"] == proxy() and "startTime" in got
    listed = h.api("GET", SERVICES).json()["services"]
    assert [s["name"] for s in listed] == [got["name"]]
    created = h.api("POST", SERVICES, json={"name": "other", "kind": "toy", "spec": {"idleTimeoutSeconds": 1}})
    assert created.status_code == 200
    page = h.api("GET", SERVICES, params={"pageSize": 1}).json()
    assert len(page["services"]) == 1 and page["nextPageToken"]
    rest = h.api("GET", SERVICES, params={"pageSize": 1, "pageToken": page["nextPageToken"]}).json()
    assert [s["name"].rsplit("/", 1)[-1] for s in rest["services"]] == ["web"]
    stopped = h.wait_state("other", (st.STOPPED,), 20)
    assert stopped["stopReason"] == "IDLE"
    woken = h.api("GET", proxy("other") + "wake")  # starts it again and waits for it
    assert woken.status_code == 200, woken.text
    assert h.api("POST", f"{SERVICES}/other:stop").json()["state"] == st.STOPPED
    refused = h.api("GET", proxy("other"))
    assert refused.status_code == 400 and ":start" in refused.json()["error"]["message"]
    assert h.api("DELETE", f"{SERVICES}/other").status_code == 200
    assert h.api("GET", f"{SERVICES}/other").status_code == 404


def test_create_refusals(h: ServiceHarness) -> None:
    bad_name = h.api("POST", SERVICES, json={"name": "no way", "kind": "toy"})
    assert bad_name.status_code == 400 and "Field: name" in bad_name.json()["error"]["message"]
    bad_kind = h.api("POST", SERVICES, json={"name": "x", "kind": "jupyter"})
    message = bad_kind.json()["error"]["message"]
    assert bad_kind.status_code == 400 and "Field: kind" in message and "toy" in message
    bad_spec = h.api("POST", SERVICES, json={"name": "x", "kind": "toy", "spec": {"nope": True}})
    assert bad_spec.status_code == 400 and "spec.nope" in bad_spec.json()["error"]["message"]
    duplicate = h.api("POST", SERVICES, json={"name": "web", "kind": "toy"})
    assert duplicate.status_code == 409


def test_starting_beyond_the_wait_is_503_with_retry_after() -> None:
    with service_harness(ToyKind, {"service_proxy_wait_seconds": 0}) as h:
        h.api("POST", SERVICES, json={"name": "slow", "kind": "toy"})
        early = h.api("GET", proxy("slow"))
        assert early.status_code == 503 and early.headers["retry-after"] == "2"
        assert early.json()["error"]["status"] == "UNAVAILABLE"
