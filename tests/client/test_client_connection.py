"""Where the client finds the server and its token."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlengine.client import Connection, resolve
from mlengine.client.connection import machine_identity, same_machine
from mlengine.config import load_settings
from mlengine.errors import Code, MLEngineError


def test_settings_win(tmp_path: Path) -> None:
    cfg = load_settings(home=tmp_path, api_url="http://h:1/", token="s3cr3t")
    assert resolve(cfg) == Connection("http://h:1", "s3cr3t")
    assert "s3cr3t" not in repr(resolve(cfg))


def test_server_file_and_admin_token(tmp_path: Path) -> None:
    (tmp_path / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:8080", "pid": 1}))
    (tmp_path / "admin_token").write_text("secret\n")
    assert resolve(load_settings(home=tmp_path)) == Connection("http://127.0.0.1:8080", "secret")


def test_no_server(tmp_path: Path) -> None:
    with pytest.raises(MLEngineError) as info:
        resolve(load_settings(home=tmp_path))
    assert info.value.code is Code.UNAVAILABLE
    assert "No mlengine server found: run `mle server start` or set MLE_API_URL" in info.value.message


def test_damaged_server_file(tmp_path: Path) -> None:
    (tmp_path / "server.json").write_text("{")
    with pytest.raises(MLEngineError, match="server.json is not valid JSON"):
        resolve(load_settings(home=tmp_path))


def test_no_token(tmp_path: Path) -> None:
    with pytest.raises(MLEngineError) as info:
        resolve(load_settings(home=tmp_path, api_url="http://remote:8080"))
    assert info.value.code is Code.UNAUTHENTICATED
    assert "MLE_TOKEN" in info.value.message and "admin_token" in info.value.message


def test_same_machine() -> None:
    machine_id, host = machine_identity()
    assert same_machine({"hostname": host, "machineId": machine_id})
    assert not same_machine({"hostname": "elsewhere.example", "machineId": machine_id})
    assert not same_machine({})
    if machine_id:
        assert not same_machine({"hostname": host, "machineId": "0" * 32})
    assert host == socket.gethostname()


def test_a_registered_transport_answers_for_its_url_only() -> None:
    import httpx

    from mlengine.client import connection
    from mlengine.client.http import Client

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"executor": "in-process"})

    url = "http://mle-routed.invalid"
    with connection.route_in_process(url + "/", lambda: httpx.MockTransport(answer)):
        with Client(url, "t", retries=0) as c:
            assert c.server_info() == {"executor": "in-process"}
        with Client.from_settings(load_settings(api_url=url, token="t"), retries=0) as c:  # the CLI's way
            assert c.server_info()["executor"] == "in-process"
        with Client("http://mle-other.invalid", "t", retries=0) as c, pytest.raises(MLEngineError) as info:
            c.server_info()  # not registered: real HTTP, and nobody answers
        assert info.value.code is Code.UNAVAILABLE
    assert seen == [f"{url}/v1/server"] * 2
    assert connection.transport_for(url) is None
    with Client(url, "t", retries=0) as c, pytest.raises(MLEngineError) as info:
        c.server_info()  # unregistered again
    assert info.value.code is Code.UNAVAILABLE and seen == [f"{url}/v1/server"] * 2


def test_an_explicit_transport_wins_over_a_registered_one() -> None:
    import httpx

    from mlengine.client import connection
    from mlengine.client.http import Client

    url = "http://mle-routed.invalid"
    registered = httpx.MockTransport(lambda r: httpx.Response(200, json={"from": "registered"}))
    explicit = httpx.MockTransport(lambda r: httpx.Response(200, json={"from": "explicit"}))
    with connection.route_in_process(url, lambda: registered), \
            Client(url, "t", transport=explicit) as c:
        assert c.server_info() == {"from": "explicit"}
