"""`mle jobs|models|projects|auth` IAM commands, shaped like gcloud's, against the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.cli.conftest import Run
from tests.inprocess import job_body, wait_for_job

from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer


def test_model_policy_commands(mle: Run, client: Client, project: str, tmp_path: Path) -> None:
    assert mle("models", "create", "m").exit_code == 0
    shown = mle("models", "get-iam-policy", "m")
    assert shown.exit_code == 0, shown.output
    policy = yaml.safe_load(shown.stdout)
    assert policy["bindings"] == [{"role": "roles/ml.modelOwner", "members": ["user:admin"]}]

    added = mle("models", "add-iam-policy-binding", "m", "--member", "group:analysts", "--role", "roles/ml.modelUser",
                "--format", "json")
    assert added.exit_code == 0, added.output
    assert "Updated IAM policy for [projects/" in added.stderr
    assert {"role": "roles/ml.modelUser", "members": ["group:analysts"]} in json.loads(added.stdout)["bindings"]

    # set-iam-policy from the YAML read before: its etag is stale now, so nothing is overwritten.
    stale = tmp_path / "policy.yaml"
    stale.write_text(shown.stdout)
    refused = mle("models", "set-iam-policy", "m", str(stale))
    assert refused.exit_code == 1 and "etag" in refused.stderr, refused.output
    current = json.loads(mle("models", "get-iam-policy", "m", "--format", "json").stdout)
    current["bindings"] = [b for b in current["bindings"] if b["role"] == "roles/ml.modelOwner"]
    fresh = tmp_path / "policy.json"
    fresh.write_text(json.dumps({"policy": current}))
    assert mle("models", "set-iam-policy", "m", str(fresh)).exit_code == 0
    assert len(client.get_iam_policy(f"projects/{project}/models/m")["bindings"]) == 1

    missing = mle("models", "remove-iam-policy-binding", "m", "--member", "group:analysts",
                  "--role", "roles/ml.modelUser")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    bad = mle("models", "add-iam-policy-binding", "m", "--member", "analysts", "--role", "roles/ml.modelUser")
    assert bad.exit_code == 1 and "members[" in bad.stderr, bad.output


def test_job_policy_commands_and_conditions(mle: Run, client: Client, project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("j", trainer_package))
    added = mle("jobs", "add-iam-policy-binding", "j", "--member", "user:ann", "--role", "roles/ml.jobOwner",
                "--condition", 'expression=request.time < timestamp("2099-01-01T00:00:00Z"),title=until 2099')
    assert added.exit_code == 0, added.output
    policy = yaml.safe_load(added.stdout)
    assert policy["version"] == 3
    assert {"role": "roles/ml.jobOwner", "members": ["user:ann"], "condition": {
        "expression": 'request.time < timestamp("2099-01-01T00:00:00Z")', "title": "until 2099"}} in policy["bindings"]
    removed = mle("jobs", "remove-iam-policy-binding", "j", "--member", "user:ann", "--role", "roles/ml.jobOwner")
    assert removed.exit_code == 0, removed.output
    assert "user:ann" not in removed.stdout
    wait_for_job(client, project, "j")


def test_project_and_server_policies_and_tokens(mle: Run, client: Client, project: str,
                                                server: InProcessServer) -> None:
    added = mle("projects", "add-iam-policy-binding", project, "--member", f"group:{project}-team",
                "--role", "roles/ml.developer")
    assert added.exit_code == 0, added.output
    made = mle("auth", "create-token", f"{project[:50]}-x", "--role", "none", "--group", f"{project}-team",
               "--format", "json")
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)
    assert token["groups"] == [f"{project}-team"] and "roles" not in token
    with server.client(token["token"], retries=0) as member:
        assert member.test_iam_permissions(f"projects/{project}", ["ml.jobs.create", "ml.jobs.cancel"]) == [
            "ml.jobs.create"]
    server_policy = yaml.safe_load(mle("auth", "get-iam-policy").stdout)
    assert {"role": "roles/ml.admin", "members": ["user:admin"]} in server_policy["bindings"]

    account = mle("auth", "create-service-account", "robot", "--display-name", "a robot")
    assert account.exit_code == 0 and f"robot@{project}.iam.mlengine" in account.stderr, account.output
    listed = json.loads(mle("auth", "list-service-accounts", "--format", "json").stdout)
    assert [a["email"] for a in listed] == [f"robot@{project}.iam.mlengine"]
    robot = mle("auth", "create-token", f"{project[:50]}-r", "--service-account", f"robot@{project}.iam.mlengine")
    assert robot.exit_code == 0, robot.output
    assert f"serviceAccount:robot@{project}.iam.mlengine" in robot.stderr and "no server-wide role" in robot.stderr
    assert mle("auth", "delete-service-account", "robot").exit_code == 0
    with server.client(robot.stdout.strip(), retries=0) as gone, pytest.raises(MLEngineError) as revoked:
        gone.test_iam_permissions("server", ["ml.jobs.get"])
    assert revoked.value.code is Code.UNAUTHENTICATED  # the account's tokens went with it
    tokens = {t["name"] for t in client.list_tokens()}
    assert f"{project[:50]}-r" not in tokens and f"{project[:50]}-x" in tokens
