"""gcloud's command shapes on the real control plane in process: --format projections on every
command, --quiet, --region, mle operations, mle models update, versions create --machine-type
--accelerator, --use-chief-in-tf-config=true|false, --*-image-uri, choices in gcloud's
spellings, and jobs cancel of a finished job."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import Result
from tests.inprocess import job_body, wait_for_job

from mlengine.cli.main import cli
from mlengine.client.http import Client
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer

Run = Callable[..., Result]


def sent_body(server: InProcessServer, method: str, path: str) -> dict[str, Any]:
    return dict(json.loads(next(r.content for r in server.requests if r.method == method and r.url.path == path)))


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


def options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def test_every_command_takes_format_and_quiet() -> None:
    for path, command in leaf_commands(cli):
        assert {"--format", "--quiet", "-q"} <= options(command), path
    assert {"--format", "--quiet", "-q"} <= options(cli)


#: Where gcloud ai-platform accepts --region (local commands do not).
REGION_COMMANDS = [("jobs", "submit", "training"), ("models", "create"), ("models", "list"),
                   ("models", "describe"), ("models", "update"), ("models", "delete"),
                   ("versions", "create"), ("versions", "list"), ("versions", "describe"),
                   ("versions", "delete"), ("versions", "update"), ("versions", "set-default"), ("predict",),
                   ("operations", "list"), ("operations", "describe"), ("operations", "wait"),
                   ("operations", "cancel")]


def test_region_where_gcloud_takes_it() -> None:
    commands = dict(leaf_commands(cli))
    for path in REGION_COMMANDS:
        assert "--region" in options(commands[path]), path
    for path in (("local", "train"), ("local", "predict")):
        assert "--region" not in options(commands[path]), path


def test_formats_on_jobs(mle: Run, server: InProcessServer, client: Client, project: str,
                         trainer_package: Path) -> None:
    client.create_job(project, {**job_body("j1", trainer_package), "labels": {"team": "ml"}})
    wait_for_job(client, project, "j1")
    assert mle("jobs", "describe", "j1", "--format", "value(state)").stdout == "SUCCEEDED\n"
    assert mle("--format=value(jobId,labels)", "jobs", "describe", "j1").stdout == "j1\tteam=ml\n"
    assert mle("jobs", "describe", "j1", "--format", "value(trainingInput.scaleTier)").stdout == "BASIC\n"
    assert mle("jobs", "list", "--format", "table(jobId,state)").stdout == "JOB_ID  STATE\nj1      SUCCEEDED\n"
    assert mle("jobs", "list", "--format", "csv(jobId,state)").stdout == "job_id,state\nj1,SUCCEEDED\n"
    assert mle("jobs", "list", "--format", "value").stdout.startswith("j1\tSUCCEEDED\t")  # default columns
    assert json.loads(mle("jobs", "list", "--format", "json").stdout)[0]["jobId"] == "j1"
    assert yaml.safe_load(mle("jobs", "describe", "j1", "--format", "yaml").stdout)["jobId"] == "j1"
    assert mle("jobs", "list").stdout.splitlines()[0].split() == ["JOB_ID", "STATUS", "CREATED"]  # unchanged


def test_bad_format_is_a_usage_error_before_any_request(mle: Run, server: InProcessServer) -> None:
    result = mle("jobs", "list", "--format", "xml")
    assert result.exit_code == 2
    assert "Format must be one of" in result.stderr and "received [xml]" in result.stderr
    result = mle("jobs", "describe", "j1", "--format", "value(state")
    assert result.exit_code == 2 and "no closing ')'" in result.stderr
    assert server.requests == []


def test_a_resource_needs_a_projection_for_value(mle: Run, client: Client, project: str) -> None:
    client.create_model(project, {"name": "m"})
    result = mle("models", "describe", "m", "--format", "value")
    assert result.exit_code == 2 and "Format [value] requires a non-empty projection" in result.stderr


def test_cancel_of_a_finished_job_is_refused_as_ai_platform_does(mle: Run, server: InProcessServer, client: Client,
                                                                 project: str, trainer_package: Path) -> None:
    client.create_job(project, job_body("done", trainer_package))
    wait_for_job(client, project, "done")
    server.clear_requests()
    result = mle("jobs", "cancel", "done")
    assert result.exit_code == 1
    assert result.stderr == "ERROR: (mle.jobs.cancel) Cannot cancel an already completed job.\n"
    with pytest.raises(MLEngineError) as info:  # the API's answer: 400 FAILED_PRECONDITION
        client.cancel_job(project, "done")
    assert info.value.code is Code.FAILED_PRECONDITION
    assert info.value.message == "Cannot cancel an already completed job."
    assert Code.FAILED_PRECONDITION.http_status == 400


def test_models_create_with_region_update_and_formats(mle: Run, server: InProcessServer, client: Client,
                                                      project: str) -> None:
    assert mle("models", "create", "m", "--region", "us-central1", "--labels", "a=1,b=2").exit_code == 0
    assert client.get_model(project, "m")["regions"] == ["us-central1"]
    result = mle("models", "update", "m", "--description", "fares", "--update-labels", "c=3",
                 "--remove-labels", "a", "--region", "us-central1")
    assert result.exit_code == 0, result.output
    assert "Updated model [m]." in result.stderr
    model = client.get_model(project, "m")
    assert (model["description"], model["labels"]) == ("fares", {"b": "2", "c": "3"})
    assert mle("models", "update", "m", "--clear-labels").exit_code == 0
    assert client.get_model(project, "m").get("labels", {}) == {}
    nothing = mle("models", "update", "m")
    assert nothing.exit_code == 2 and "Nothing to update" in nothing.stderr
    assert mle("models", "list", "--format", "value(name.basename(),description)").stdout == "m\tfares\n"
    assert mle("models", "list", "--format", "value(name)", "--region", "europe-west1").stdout == (
        f"projects/{project}/models/m\n")


def test_operations_list_describe_wait_cancel(mle: Run, client: Client, project: str) -> None:
    client.create_model(project, {"name": "m"})
    assert mle("models", "update", "m", "--description", "d").exit_code == 0
    listed = mle("operations", "list", "--format", "value(name.basename(), metadata.operationType, done)")
    assert listed.exit_code == 0, listed.output
    [line] = listed.stdout.splitlines()
    op_id, kind, done = line.split("\t")
    assert (kind, done) == ("UPDATE_MODEL", "True")
    table = mle("operations", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "OPERATION_TYPE", "DONE", "CREATED"] and table[1].startswith(op_id)
    full = f"projects/{project}/operations/{op_id}"
    assert mle("operations", "describe", op_id, "--format", "value(name)").stdout == full + "\n"
    assert json.loads(mle("operations", "describe", full, "--format", "json").stdout)["done"] is True
    waited = mle("operations", "wait", op_id, "--format", "value(response.description)")
    assert waited.exit_code == 0 and waited.stdout == "d\n"
    cancelled = mle("operations", "cancel", op_id)  # a done operation cannot be cancelled
    assert cancelled.exit_code == 1 and "is already done" in cancelled.stderr
    missing = mle("operations", "describe", "nope")
    assert missing.exit_code == 1 and missing.stderr.startswith("ERROR: (mle.operations.describe)")
    bad = mle("operations", "describe", "projects/p/models/m")
    assert bad.exit_code == 2 and "is not projects/PROJECT/operations/ID" in bad.stderr


def test_versions_create_sends_machine_type_and_accelerator(mle: Run, server: InProcessServer, client: Client,
                                                            project: str, tmp_path: Path) -> None:
    client.create_model(project, {"name": "m"})
    server.clear_requests()
    result = mle("versions", "create", "v1", "--model", "m", "--origin", str(tmp_path), "--region", "us-east1",
                 "--framework", "SCIKIT_LEARN", "--machine-type", "n1-standard-4",
                 "--accelerator", "type=nvidia-tesla-t4,count=1")
    body = sent_body(server, "POST", f"/v1/projects/{project}/models/m/versions")
    assert body["machineType"] == "n1-standard-4" and body["framework"] == "SCIKIT_LEARN"
    assert body["acceleratorConfig"] == {"type": "NVIDIA_TESLA_T4", "count": 1}
    # mlengine serves on CPUs: the server refuses the accelerator, naming AI Platform's field
    assert result.exit_code == 1 and "acceleratorConfig" in result.stderr and "not implemented" in result.stderr
    server.clear_requests()
    result = mle("versions", "create", "v1", "--model", "m", "--origin", str(tmp_path), "--framework",
                 "scikit-learn", "--machine-type", "big-box")
    assert sent_body(server, "POST", f"/v1/projects/{project}/models/m/versions")["framework"] == "SCIKIT_LEARN"
    assert result.exit_code == 1 and "machineType" in result.stderr and "big-box" in result.stderr
    bad = mle("versions", "create", "v1", "--model", "m", "--origin", str(tmp_path), "--framework", "sklearn")
    assert bad.exit_code == 2 and "'sklearn' is not one of tensorflow, scikit-learn" in bad.stderr


@pytest.mark.parametrize(("flag", "expected"), [
    (["--use-chief-in-tf-config"], True),
    (["--use-chief-in-tf-config=true"], True),
    (["--use-chief-in-tf-config", "false"], False),
    (["--use-chief-in-tf-config=False"], False),
    ([], None),
])
def test_use_chief_in_tf_config_takes_a_boolean(mle: Run, server: InProcessServer, project: str,
                                                trainer_package: Path, flag: list[str], expected: bool | None) -> None:
    result = mle("jobs", "submit", "training", *flag, "chief_job", "--packages", str(trainer_package),
                 "--module-name", "trainer.task", "--scale-tier", "Basic", "--region", "us-central1")
    assert result.exit_code == 0, result.output
    ti = sent_body(server, "POST", f"/v1/projects/{project}/jobs")["trainingInput"]
    assert ti.get("useChiefInTfConfig") is expected
    assert (ti["scaleTier"], ti["region"]) == ("BASIC", "us-central1")


def test_use_chief_in_tf_config_refuses_other_words(mle: Run, server: InProcessServer, trainer_package: Path) -> None:
    result = mle("jobs", "submit", "training", "j", "--use-chief-in-tf-config=maybe", "--packages",
                 str(trainer_package), "--module-name", "trainer.task")
    assert result.exit_code == 2 and "--use-chief-in-tf-config" in result.stderr
    assert server.requests == []


def test_image_uri_flags_send_the_replica_configs(mle: Run, server: InProcessServer, project: str,
                                                  trainer_package: Path) -> None:
    result = mle("jobs", "submit", "training", "img", "--packages", str(trainer_package), "--module-name",
                 "trainer.task", "--scale-tier", "custom", "--master-machine-type", "n1-standard-4",
                 "--master-image-uri", "docker.io/someone/trainer:1",
                 "--worker-machine-type", "n1-standard-4", "--worker-count", "1",
                 "--worker-image-uri", "docker.io/someone/trainer:1",
                 "--worker-accelerator", "type=nvidia-tesla-t4,count=1")
    ti = sent_body(server, "POST", f"/v1/projects/{project}/jobs")["trainingInput"]
    assert ti["masterConfig"] == {"imageUri": "docker.io/someone/trainer:1"}
    assert ti["workerConfig"] == {"imageUri": "docker.io/someone/trainer:1",
                                  "acceleratorConfig": {"type": "NVIDIA_TESLA_T4", "count": 1}}
    # Only Google's pre-built framework images can run here: any other image is refused by the server.
    assert result.exit_code == 1
    assert "trainingInput.masterConfig.imageUri" in result.stderr


def test_quiet_skips_the_delete_prompt(mle: Run, client: Client, project: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mlengine.cli import core

    client.create_model(project, {"name": "m"})
    monkeypatch.setattr(core, "interactive", lambda: True)  # CliRunner has no terminal to answer on
    result = mle("models", "delete", "m", input="n\n")
    assert result.exit_code == 1
    assert "This will delete model [m]" in result.stderr and "Aborted by user." in result.stderr
    assert client.get_model(project, "m")["name"].endswith("/m")
    result = mle("-q", "models", "delete", "m")
    assert result.exit_code == 0 and "Do you want to continue" not in result.stderr
    assert "Deleted model [m]." in result.stderr
    client.create_model(project, {"name": "m2"})
    result = mle("models", "delete", "m2", input="y\n")
    assert result.exit_code == 0 and "Do you want to continue" in result.stderr


def test_no_prompt_without_a_terminal(mle: Run, client: Client, project: str) -> None:
    client.create_model(project, {"name": "m"})
    result = mle("models", "delete", "m")
    assert result.exit_code == 0 and "Do you want to continue" not in result.stderr
