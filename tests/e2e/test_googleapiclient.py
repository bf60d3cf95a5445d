"""The official Google API client, pointed at our server, works unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, job_body

pytestmark = pytest.mark.e2e


def ml_client(server: ServerProcess):
    from google.oauth2.credentials import Credentials
    from googleapiclient import discovery

    return discovery.build(
        "ml", "v1", credentials=Credentials(token=server.token),
        client_options={"api_endpoint": server.url + "/"}, cache_discovery=False,
    )


def test_jobs_through_googleapiclient(server: ServerProcess, echo_package: Path) -> None:
    from googleapiclient.errors import HttpError

    ml = ml_client(server)
    parent = "projects/mlengine"
    body = job_body("gapi_job", echo_package)
    body["labels"] = {"via": "googleapiclient"}
    created = ml.projects().jobs().create(parent=parent, body=body).execute()
    assert created["jobId"] == "gapi_job"
    name = f"{parent}/jobs/gapi_job"
    got = ml.projects().jobs().get(name=name).execute()
    assert got["labels"] == {"via": "googleapiclient"}
    server.wait_state("gapi_job", ("SUCCEEDED", "FAILED"))
    got = ml.projects().jobs().get(name=name).execute()
    assert got["state"] == "SUCCEEDED"

    listed = ml.projects().jobs().list(parent=parent, filter="labels.via=googleapiclient").execute()
    assert [j["jobId"] for j in listed["jobs"]] == ["gapi_job"]
    patched = ml.projects().jobs().patch(
        name=name, updateMask="labels", body={"labels": {"via": "patched"}, "etag": got["etag"]}
    ).execute()
    assert patched["labels"] == {"via": "patched"}

    with pytest.raises(HttpError) as info:
        ml.projects().jobs().create(parent=parent, body=body).execute()
    assert info.value.resp.status == 409

    body2 = job_body("gapi_cancel", echo_package, ["--sleep", "300"])
    ml.projects().jobs().create(parent=parent, body=body2).execute()
    server.wait_state("gapi_cancel", ("RUNNING",), timeout=60)
    assert ml.projects().jobs().cancel(name=f"{parent}/jobs/gapi_cancel", body={}).execute() == {}
    server.wait_state("gapi_cancel", ("CANCELLED",), timeout=15)

    with pytest.raises(HttpError) as missing:
        ml.projects().jobs().get(name=f"{parent}/jobs/nope").execute()
    assert missing.value.resp.status == 404
