"""No server-side request forgery through a version (issue 9.4): ``deploymentUri`` and
``packageUris`` go through the server's URI policy when the version is created (400 naming the
field) and again when the staging worker reads them; the real app runs in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.inprocess import client, inprocess_server, project, server  # noqa: F401

from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError
from mlengine.prediction import staging
from mlengine.storage.policy import UriPolicy, fetch_file, uri_policy
from mlengine.testing.inprocess import InProcessServer

METADATA = "http://169.254.169.254/computeMetadata/v1/instance/"


def refused(client: Client, project: str, body: dict[str, object]) -> str:  # noqa: F811
    with pytest.raises(MLEngineError) as info:
        client.create_version(project, "m", {"name": "v1", **body})
    assert info.value.code is Code.INVALID_ARGUMENT, info.value
    return info.value.message


@pytest.fixture
def model(client: Client, project: str) -> str:  # noqa: F811
    client.create_model(project, {"name": "m"})
    return "m"


def test_deployment_uri_inside_mle_home_is_refused(server: InProcessServer, client: Client,  # noqa: F811
                                                   project: str, model: str, tmp_path: Path) -> None:  # noqa: F811
    home = server.settings.home
    link = tmp_path / "innocent"
    link.symlink_to(home)  # resolved before it is checked
    for uri in (str(home), str(home / "models"), f"file://{home}", str(link)):
        message = refused(client, project, {"deploymentUri": uri})
        assert "deploymentUri" in message and "private directory" in message, message
    assert list(client.list_versions(project, model)) == []


def test_metadata_service_and_private_addresses_are_refused(client: Client, project: str,  # noqa: F811
                                                            model: str, sk_model_dir: Path) -> None:
    for uri in (METADATA, "http://127.0.0.1:8080/model", "http://[::1]/model", "simplecache::http://10.0.0.1/m"):
        message = refused(client, project, {"deploymentUri": uri})
        assert "deploymentUri" in message and "address the server does not fetch from" in message, message
    message = refused(client, project, {"deploymentUri": str(sk_model_dir), "predictionClass": "p.C",
                                        "packageUris": [METADATA + "pkg.tar.gz"]})
    assert "packageUris[0]" in message and "169.254.169.254" in message, message


def test_http_deployment_uri_is_refused_even_when_public(client: Client, project: str,  # noqa: F811
                                                         model: str) -> None:
    message = refused(client, project, {"deploymentUri": "https://93.184.215.14/models/fares/"})
    assert "deploymentUri" in message and "cannot name a model directory" in message, message


def test_a_local_directory_outside_deploys(client: Client, project: str, model: str,  # noqa: F811
                                           sk_model_dir: Path) -> None:
    version = client.wait_operation(client.create_version(project, model, {
        "name": "v1", "deploymentUri": str(sk_model_dir)}), timeout=120)
    assert version["state"] == "READY", version
    assert client.predict(project, model, {"instances": [[0.1, 0.2, 0.3]]})["predictions"]


def test_staging_checks_the_uris_again(server: InProcessServer, tmp_path: Path, sk_model_dir: Path) -> None:  # noqa: F811
    """A directory that became a link into MLE_HOME after the version was accepted is refused
    when the worker copies it; so is a package URI pointing at a private address."""
    policy = uri_policy(server.settings)
    assert UriPolicy.from_json(policy.to_json()) == policy
    swapped = tmp_path / "model"
    swapped.symlink_to(server.settings.home)
    payload = staging.stage_payload(tmp_path / "root", {"deploymentUri": str(swapped)}, max_files=10,
                                    max_bytes=10**6, envs_dir=tmp_path / "envs", uri_policy=policy)
    with pytest.raises(MLEngineError, match="Field: deploymentUri Error: .* is inside the server's private directory"):
        staging.stage_version(payload)
    payload = staging.stage_payload(tmp_path / "root", {"deploymentUri": str(sk_model_dir), "predictionClass": "p.C",
                                                        "packageUris": ["http://127.0.0.1:9/p.tar.gz"]},
                                    max_files=10, max_bytes=10**6, envs_dir=tmp_path / "envs", uri_policy=policy)
    with pytest.raises(MLEngineError, match=r"Field: packageUris\[0\] Error: .*127.0.0.1"):
        staging.stage_version(payload)
    with pytest.raises(MLEngineError, match="169.254.169.254"):
        fetch_file("simplecache::" + METADATA + "p.tar.gz", tmp_path / "dl", policy, "packageUris[0]")
