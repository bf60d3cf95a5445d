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


def test_iam_through_googleapiclient(server: ServerProcess, echo_package: Path) -> None:
    """getIamPolicy, setIamPolicy (etag-guarded) and testIamPermissions on a model and a job."""
    from googleapiclient.errors import HttpError

    ml = ml_client(server)
    parent = "projects/mlengine"
    ml.projects().models().create(parent=parent, body={"name": "gapi_iam"}).execute()
    model = f"{parent}/models/gapi_iam"
    policy = ml.projects().models().getIamPolicy(resource=model).execute()
    assert policy["bindings"] == [{"role": "roles/ml.modelOwner", "members": ["user:admin"]}]
    policy["bindings"].append({"role": "roles/ml.modelUser", "members": ["group:analysts"]})
    updated = ml.projects().models().setIamPolicy(resource=model, body={"policy": policy}).execute()
    assert {b["role"] for b in updated["bindings"]} == {"roles/ml.modelOwner", "roles/ml.modelUser"}
    assert updated["etag"] != policy["etag"]
    with pytest.raises(HttpError) as stale:  # the etag read before the change
        ml.projects().models().setIamPolicy(resource=model, body={"policy": policy}).execute()
    assert stale.value.resp.status == 409
    with pytest.raises(HttpError) as bad:
        ml.projects().models().setIamPolicy(resource=model, body={"policy": {
            "bindings": [{"role": "roles/ml.superuser", "members": ["user:x"]}]}}).execute()
    assert bad.value.resp.status == 400 and b"policy.bindings[0].role" in bad.value.content
    tested = ml.projects().models().testIamPermissions(
        resource=model, body={"permissions": ["ml.models.predict", "ml.versions.create"]}).execute()
    assert tested == {"permissions": ["ml.models.predict", "ml.versions.create"]}

    ml.projects().jobs().create(parent=parent, body=job_body("gapi_iam_job", echo_package)).execute()
    job = f"{parent}/jobs/gapi_iam_job"
    job_policy = ml.projects().jobs().getIamPolicy(resource=job, options_requestedPolicyVersion=3).execute()
    assert {b["role"]: b["members"] for b in job_policy["bindings"]} == {
        "roles/ml.jobOwner": ["user:admin"],
        "roles/ml.viewer": ["serviceAccount:job-gapi_iam_job@mlengine.iam.mlengine"]}
    job_policy["bindings"].append({"role": "roles/ml.jobOwner", "members": ["user:ann"]})
    after = ml.projects().jobs().setIamPolicy(resource=job, body={"policy": job_policy}).execute()
    assert {"user:admin", "user:ann"} <= {m for b in after["bindings"] for m in b["members"]}
    assert ml.projects().jobs().testIamPermissions(
        resource=job, body={"permissions": ["ml.jobs.cancel"]}).execute() == {"permissions": ["ml.jobs.cancel"]}
    server.wait_state("gapi_iam_job", ("SUCCEEDED", "FAILED"))
