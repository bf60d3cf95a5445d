"""IAM on the real app in process: creators own what they create, developers cannot touch
others' jobs and models unless a binding grants it, bindings scope to their resource, policies
are validated and etag-guarded, groups and service accounts, and the tokens of jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.inprocess import job_body, wait_for_job

from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer


def denied(call: Any, permission: str, resource: str) -> None:
    with pytest.raises(MLEngineError) as info:
        call()
    assert info.value.code is Code.PERMISSION_DENIED, info.value
    assert f"'{permission}'" in info.value.message and f"'{resource}'" in info.value.message, info.value.message


class Tokens:
    """Users of one test: ``tokens.client("ann", role="editor")`` makes the token once."""

    def __init__(self, server: InProcessServer, admin: Client, prefix: str) -> None:
        self.server, self.admin, self.prefix = server, admin, prefix
        self.clients: dict[str, Client] = {}

    def client(self, name: str, role: str | None = "editor", **kwargs: Any) -> Client:
        if name not in self.clients:
            created = self.admin.create_token(f"{self.prefix}-{name}", role, user=f"{self.prefix}-{name}", **kwargs)
            self.clients[name] = self.server.client(created["token"], retries=0)
        return self.clients[name]

    def member(self, name: str) -> str:
        return f"user:{self.prefix}-{name}"

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


@pytest.fixture
def users(server: InProcessServer, client: Client, project: str) -> Iterator[Tokens]:
    tokens = Tokens(server, client, project[:40].rstrip("-"))
    yield tokens
    tokens.close()


def sleeper(job_id: str, package: Path) -> dict[str, Any]:
    return job_body(job_id, package, "--sleep", "60")


def test_developers_control_their_own_jobs_only(users: Tokens, client: Client, project: str,
                                                trainer_package: Path) -> None:
    ann, bob = users.client("ann"), users.client("bob")
    ann.create_job(project, sleeper("j1", trainer_package))
    ann.create_job(project, sleeper("j2", trainer_package))
    j1, j2 = f"projects/{project}/jobs/j1", f"projects/{project}/jobs/j2"
    assert client.get_iam_policy(j1)["bindings"] == [
        {"role": "roles/ml.jobOwner", "members": [users.member("ann")]},
        {"role": "roles/ml.viewer", "members": [f"serviceAccount:job-j1@{project}.iam.mlengine"]}]

    assert bob.get_job(project, "j1")["jobId"] == "j1"  # developers read every job of the project
    denied(lambda: bob.cancel_job(project, "j1"), "ml.jobs.cancel", j1)
    denied(lambda: bob.patch_job_labels(project, "j1", {"by": "bob"}), "ml.jobs.update", j1)
    denied(lambda: bob.get_iam_policy(j1), "ml.jobs.getIamPolicy", j1)
    denied(lambda: bob.add_iam_policy_binding(j1, users.member("bob"), "roles/ml.jobOwner"),
           "ml.jobs.getIamPolicy", j1)
    assert bob.test_iam_permissions(j1, ["ml.jobs.get", "ml.jobs.cancel"]) == ["ml.jobs.get"]

    # The owner grants bob roles/ml.jobOwner on j1: bob may cancel j1, and still not j2.
    ann.add_iam_policy_binding(j1, users.member("bob"), "roles/ml.jobOwner")
    assert bob.test_iam_permissions(j1, ["ml.jobs.cancel"]) == ["ml.jobs.cancel"]
    assert bob.cancel_job(project, "j1") == {}
    denied(lambda: bob.cancel_job(project, "j2"), "ml.jobs.cancel", j2)
    assert ann.cancel_job(project, "j2") == {}
    for job in ("j1", "j2"):
        assert wait_for_job(client, project, job)["state"] == "CANCELLED"


def test_versions_go_to_models_whose_owner_allows(users: Tokens, client: Client, project: str,
                                                  tmp_path: Path) -> None:
    from tests.e2e.serving_helpers import write_sklearn_model

    ann, bob = users.client("ann"), users.client("bob")
    ann.create_model(project, {"name": "m"})
    model = f"projects/{project}/models/m"
    body = {"name": "v1", "deploymentUri": str(write_sklearn_model(tmp_path / "model")),
            "autoScaling": {"minNodes": 0}}
    denied(lambda: bob.create_version(project, "m", body), "ml.versions.create", model)
    denied(lambda: bob.delete_model(project, "m"), "ml.models.delete", model)
    ann.add_iam_policy_binding(model, users.member("bob"), "roles/ml.modelOwner")
    created = bob.wait_operation(bob.create_version(project, "m", body), timeout=240)
    assert created["state"] == "READY", created
    assert bob.predict(project, "m", {"instances": [[1, 2, 3]]})["predictions"]
    bob.wait_operation(bob.delete_version(project, "m", "v1"), timeout=120)
    assert bob.delete_model(project, "m")["done"] is True
    client.create_model(project, {"name": "m"})  # a new model of that name: a new policy
    assert client.get_iam_policy(model)["bindings"] == [{"role": "roles/ml.modelOwner", "members": ["user:admin"]}]
    denied(lambda: bob.delete_model(project, "m"), "ml.models.delete", model)


def test_resource_bindings_grant_that_resource_and_do_not_list(users: Tokens, client: Client,
                                                               project: str) -> None:
    carl = users.client("carl", role=None)  # a principal with no binding anywhere
    for name in ("m", "other"):
        client.create_model(project, {"name": name})
    model, other = f"projects/{project}/models/m", f"projects/{project}/models/other"
    denied(lambda: carl.get_model(project, "m"), "ml.models.get", model)
    denied(lambda: carl.predict(project, "m", {"instances": [[1, 2, 3]]}), "ml.models.predict", model)
    client.add_iam_policy_binding(model, users.member("carl"), "roles/ml.modelUser")
    assert carl.get_model(project, "m")["name"] == model
    with pytest.raises(MLEngineError) as no_version:  # authorized: the model has no version
        carl.predict(project, "m", {"instances": [[1, 2, 3]]})
    assert no_version.value.code is not Code.PERMISSION_DENIED
    denied(lambda: list(carl.list_models(project)), "ml.models.list", f"projects/{project}")
    denied(lambda: carl.get_model(project, "other"), "ml.models.get", other)
    # Taking the binding away takes effect at once (the predict path's cache is invalidated).
    client.remove_iam_policy_binding(model, users.member("carl"), "roles/ml.modelUser")
    denied(lambda: carl.predict(project, "m", {"instances": [[1, 2, 3]]}), "ml.models.predict", model)


def test_project_and_group_bindings(users: Tokens, client: Client, project: str, trainer_package: Path) -> None:
    dan = users.client("dan", role=None, groups=[f"{project[:30]}-analysts"])
    group = f"group:{project[:30]}-analysts"
    here, elsewhere = f"projects/{project}", f"projects/{project}-2"
    denied(lambda: list(dan.list_jobs(project)), "ml.jobs.list", here)
    client.add_iam_policy_binding(here, group, "roles/ml.developer")
    assert list(dan.list_jobs(project)) == []
    dan.create_job(project, job_body("quick", trainer_package))
    assert client.get_iam_policy(f"{here}/jobs/quick")["bindings"][0]["members"] == [users.member("dan")]
    denied(lambda: list(dan.list_jobs(f"{project}-2")), "ml.jobs.list", elsewhere)
    assert wait_for_job(client, project, "quick")["state"] == "SUCCEEDED"
    client.remove_iam_policy_binding(here, group, "roles/ml.developer")
    denied(lambda: list(dan.list_jobs(project)), "ml.jobs.list", here)
    assert dan.get_job(project, "quick")["state"] == "SUCCEEDED"  # its creator owns it still


def test_policies_are_validated_and_etag_guarded(client: Client, project: str) -> None:
    client.create_model(project, {"name": "m"})
    model = f"projects/{project}/models/m"
    read = client.get_iam_policy(model)
    client.add_iam_policy_binding(model, "user:eve", "roles/ml.modelUser")
    with pytest.raises(MLEngineError) as stale:
        client.set_iam_policy(model, read)
    assert stale.value.code is Code.ABORTED and "etag" in stale.value.message

    def refused(bindings: list[dict[str, Any]], field: str, **policy: Any) -> None:
        with pytest.raises(MLEngineError) as info:
            client.set_iam_policy(model, {"bindings": bindings, **policy})
        assert info.value.code is Code.INVALID_ARGUMENT and f"Field: {field}" in info.value.message, info.value

    refused([{"role": "roles/ml.god", "members": ["user:eve"]}], "policy.bindings[0].role")
    refused([{"role": "roles/ml.viewer", "members": ["eve"]}], "policy.bindings[0].members[0]")
    refused([{"role": "roles/ml.viewer", "members": ["user:ok", "allUsers"]}], "policy.bindings[0].members[1]")
    refused([{"role": "roles/ml.viewer", "members": ["domain:example.com"]}], "policy.bindings[0].members[0]")
    refused([{"role": "roles/ml.viewer", "members": []}], "policy.bindings[0].members")
    refused([{"role": "roles/ml.viewer", "members": ["user:eve"],
              "condition": {"expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}], "policy.version")
    refused([{"role": "roles/ml.viewer", "members": ["user:eve"], "condition": {"expression": "true"}}],
            "policy.bindings[0].condition.expression", version=3)
    with pytest.raises(MLEngineError) as missing:
        client.get_iam_policy(f"projects/{project}/models/nope")
    assert missing.value.code is Code.NOT_FOUND
    with pytest.raises(MLEngineError) as lockout:
        client.set_iam_policy("server", {"bindings": [{"role": "roles/ml.viewer", "members": ["user:admin"]}]})
    assert lockout.value.code is Code.FAILED_PRECONDITION


def test_expirable_bindings(users: Tokens, client: Client, project: str) -> None:
    fay = users.client("fay", role=None)
    client.create_model(project, {"name": "m"})
    model = f"projects/{project}/models/m"
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    client.add_iam_policy_binding(model, users.member("fay"), "roles/ml.modelUser",
                                  {"title": "briefly", "expression": f'request.time < timestamp("{soon}")'})
    assert client.get_iam_policy(model, requested_version=3)["version"] == 3
    assert fay.get_model(project, "m")["name"] == model
    time.sleep(2.5)
    denied(lambda: fay.get_model(project, "m"), "ml.models.get", model)


def test_service_accounts_and_act_as(users: Tokens, client: Client, project: str, trainer_package: Path) -> None:
    bob = users.client("bob")
    account = client.create_service_account(project, "trainer", "nightly")
    email = f"trainer@{project}.iam.mlengine"
    assert account["email"] == email and client.list_service_accounts(project) == [account]
    body = job_body("as_trainer", trainer_package, serviceAccount=email)
    denied(lambda: bob.create_job(project, body), "iam.serviceAccounts.actAs",
           f"projects/{project}/serviceAccounts/{email}")
    for wrong in (f"nobody@{project}.iam.mlengine", "trainer@other.iam.mlengine", "trainer@example.com",
                  f"job-x@{project}.iam.mlengine"):
        with pytest.raises(MLEngineError) as info:
            client.create_job(project, job_body("as_wrong", trainer_package, serviceAccount=wrong))
        assert "Field: trainingInput.serviceAccount" in info.value.message, info.value
    client.add_iam_policy_binding(f"projects/{project}", users.member("bob"), "roles/iam.serviceAccountUser")
    bob.create_job(project, body)
    job = f"projects/{project}/jobs/as_trainer"
    assert {"role": "roles/ml.viewer", "members": [f"serviceAccount:{email}"]} in client.get_iam_policy(job)["bindings"]

    # A token of the account reads the job it runs, and nothing else.
    token = client.create_token(f"{project[:50]}-sa", None, service_account=email)
    assert token["principal"] == f"serviceAccount:{email}" and "roles" not in token
    with users.server.client(token["token"], retries=0) as robot:
        assert robot.get_job(project, "as_trainer")["jobId"] == "as_trainer"
        denied(lambda: robot.cancel_job(project, "as_trainer"), "ml.jobs.cancel", job)
        denied(lambda: list(robot.list_jobs(project)), "ml.jobs.list", f"projects/{project}")
    wait_for_job(client, project, "as_trainer")
    client.delete_service_account(project, "trainer")  # its tokens go with it
    assert all(t["name"] != f"{project[:50]}-sa" for t in client.list_tokens())


def test_a_job_has_a_token_while_it_runs(client: Client, project: str, trainer_package: Path,
                                         server: InProcessServer) -> None:
    client.create_job(project, sleeper("tokened", trainer_package))
    wait_for_job(client, project, "tokened", ("RUNNING",))
    member = f"serviceAccount:job-tokened@{project}.iam.mlengine"
    mine = [t for t in client.list_tokens() if t["principal"] == member]
    assert len(mine) == 1 and mine[0]["job"] is True and mine[0]["name"].endswith("-1")
    client.cancel_job(project, "tokened")
    wait_for_job(client, project, "tokened")
    deadline = time.monotonic() + 10
    while any(t["principal"] == member for t in client.list_tokens()):
        assert time.monotonic() < deadline, "the job's token outlived it"
        time.sleep(0.05)
    with pytest.raises(MLEngineError) as info:  # users cannot take the names of jobs' tokens
        client.create_token("job-1-1", "viewer")
    assert info.value.code is Code.INVALID_ARGUMENT


def test_operations_are_authorized_on_their_target(users: Tokens, project: str) -> None:
    ann, bob = users.client("ann"), users.client("bob")
    ann.create_model(project, {"name": "m"})
    operation = ann.patch_model(project, "m", {"description": "mine"}, "description")
    assert bob.get_operation(operation["name"])["done"] is True  # developers read the project's operations
    denied(lambda: bob.cancel_operation(operation["name"]), "ml.operations.cancel",
           f"projects/{project}/models/m")
    with pytest.raises(MLEngineError) as done:  # the owner may: it is just finished already
        ann.cancel_operation(operation["name"])
    assert done.value.code is not Code.PERMISSION_DENIED
