"""The notebooks routes in process: bad bodies answer 400 naming the field (nothing started,
no token minted), unknown instances 404, a plain service is no notebook, and the CLI's
durations."""

from __future__ import annotations

import click
import pytest
from tests.inprocess import client, inprocess_server, server  # noqa: F401

from mlengine.cli.notebooks import parse_duration
from mlengine.client.http import Client
from mlengine.errors import MLEngineError

NOTEBOOKS = "/v1/projects/nbapi/notebooks"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "nb", "idleTimeout": "soon"}, "idleTimeout"),
    ({"name": "nb", "idleTimeout": "-5s"}, "idleTimeout"),
    ({"name": "nb", "gitRemote": "ftp://example.com/x.git"}, "spec.gitRemote"),
    ({"name": "nb", "gitRemote": "--upload-pack=evil"}, "spec.gitRemote"),
    ({"name": "9bad"}, "name"),
    ({"name": "nb", "disk": "/etc"}, "disk"),
    ([], "notebook"),
])
def test_bad_bodies_name_the_field(client: Client, body: object, field: str) -> None:  # noqa: F811
    tokens_before = len(client.request("GET", "/v1/tokens").get("tokens", []))
    with pytest.raises(MLEngineError) as info:
        client.request("POST", NOTEBOOKS, json=body)
    assert info.value.code.http_status == 400 and f"Field: {field} " in info.value.message, info.value.message
    assert client.request("GET", NOTEBOOKS) == {"notebooks": []}
    assert len(client.request("GET", "/v1/tokens").get("tokens", [])) == tokens_before


def test_unknown_instances_are_404(client: Client) -> None:  # noqa: F811
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", ":start"), ("POST", ":stop"), ("GET", "/history")):
        with pytest.raises(MLEngineError) as info:
            client.request(method, f"{NOTEBOOKS}/ghost{suffix}", json={} if method == "POST" else None)
        assert info.value.code.http_status == 404, (method, suffix, info.value)


def test_durations() -> None:
    assert parse_duration("90m") == "5400s"
    assert parse_duration("2h") == "7200s" and parse_duration("45") == "45s" and parse_duration("0") == "0s"
    with pytest.raises(click.BadParameter):
        parse_duration("soon")
