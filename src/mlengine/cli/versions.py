"""``mle versions``: create, list, describe, delete, set-default, update
(``gcloud ai-platform versions``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlengine.cli import monitoring as monitoring_cli
from mlengine.cli import output
from mlengine.cli.core import (
    GcloudChoice,
    MleGroup,
    client,
    confirm,
    fail,
    parse_accelerator,
    parse_key_values,
    parse_list,
    project_of,
    project_option,
    region_option,
)

#: The Version's framework enum (gcloud's spellings accepted: scikit-learn, SCIKIT_LEARN...).
FRAMEWORK_CHOICES = ("TENSORFLOW", "SCIKIT_LEARN", "XGBOOST", "ONNX", "PYTORCH")
VERSIONS_TABLE = ("table(name.basename(), state, framework, isDefault.yesno('*', ''):label=DEFAULT, "
                  "deploymentUri)")


def model_option(func: Any) -> Any:
    """``--model`` (and ``--region``, which every versions command accepts as gcloud's do)."""
    func = region_option(func)
    return click.option("--model", required=True, metavar="MODEL", help="The model of the version.")(func)


@click.group(cls=MleGroup)
def versions() -> None:
    """Deploy model versions and manage them.

    \b
    Examples:
      mle versions create v1 --model taxifare --origin ./export/1712345 --framework tensorflow
      mle versions list --model taxifare
      mle versions set-default v2 --model taxifare
      mle versions update v1 --model taxifare --min-nodes 1
      mle versions delete v1 --model taxifare
    """


def _load_config(path: str) -> dict[str, Any]:
    from mlengine.cli.submit import load_config

    data = load_config(path)
    return dict(data)


def _server_path(c: Any, uri: str, what: str) -> str:
    """A local path made absolute, checked to be readable by the server."""
    from mlengine.client.connection import same_machine
    from mlengine.client.staging import absolute_uri
    from mlengine.storage import uris

    uri = absolute_uri(uri)
    if uris.is_local(uri) and not same_machine(c.server_info()):
        raise fail(f"{what} {uri} is a local path, but the server runs on another machine: put it where the "
                   "server can read it (gs://, s3://...) and pass that URI.")
    return uri


@versions.command()
@click.argument("version")
@model_option
@project_option
@click.option("--origin", default=None, metavar="DIR", help="Directory (or URI) of the exported model.")
@click.option("--framework", type=GcloudChoice(FRAMEWORK_CHOICES), default=None,
              help="Framework of the model (default: detected from the files).")
@click.option("--runtime-version", default=None, help="Recorded on the version (mlengine serves with what it has).")
@click.option("--python-version", default=None, help="Must match the server's Python (e.g. 3.11).")
@click.option("--min-nodes", type=click.IntRange(min=0), default=None, help="autoScaling.minNodes (0 = scale to zero).")
@click.option("--max-nodes", type=click.IntRange(min=1), default=None, help="autoScaling.maxNodes.")
@click.option("--machine-type", default=None, metavar="TYPE",
              help="machineType of the replicas, e.g. n1-standard-4 or mls1-c1-m2 (caps their CPUs).")
@click.option("--accelerator", default=None, metavar="type=TYPE,count=N",
              help="acceleratorConfig, e.g. type=nvidia-tesla-t4,count=1 (the server refuses it: "
                   "replicas run on CPUs).")
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="YAML or JSON file with Version fields (flags override it).")
@click.option("--prediction-class", default=None, metavar="MODULE.CLASS",
              help="Custom prediction routine: a class with from_path(model_dir) and predict(instances, **kwargs).")
@click.option("--package-uris", default=None, metavar="URI,...", help="Packages holding the prediction class.")
@click.option("--description", default=None)
@click.option("--labels", metavar="KEY=VALUE,...", default=None)
@click.option("--async", "run_async", is_flag=True, help="Return at once instead of waiting for the version.")
@monitoring_cli.create_options
def create(version: str, model: str, project: str | None, origin: str | None, framework: str | None,
           runtime_version: str | None, python_version: str | None, min_nodes: int | None, max_nodes: int | None,
           machine_type: str | None, accelerator: str | None, config_path: str | None, prediction_class: str | None,
           package_uris: str | None,
           description: str | None, labels: str | None, run_async: bool, **monitoring: Any) -> None:
    """Create version VERSION of MODEL from the exported model in --origin.

    Waits until the version is READY (its model loaded in a replica) or FAILED, unless --async.

    \b
    Examples:
      mle versions create v1 --model taxifare --origin /tmp/taxifare/export/1712345
      mle versions create v2 --model fares --origin ./sk_model --framework scikit-learn --min-nodes 1
      mle versions create v3 --model fares --origin ./sk_model --machine-type n1-standard-4
      mle versions create cpr --model fares --origin ./model --prediction-class predictor.MyPredictor \\
          --package-uris dist/my_predictor-0.1.tar.gz
    """
    body: dict[str, Any] = _load_config(config_path) if config_path else {}
    c = client()
    body["name"] = version
    if origin:
        body["deploymentUri"] = _server_path(c, origin, "--origin")
    elif not body.get("deploymentUri"):
        raise click.UsageError("--origin (or deploymentUri in --config) is required.")
    for key, value in (("framework", framework), ("runtimeVersion", runtime_version),
                       ("pythonVersion", python_version), ("predictionClass", prediction_class),
                       ("description", description), ("machineType", machine_type)):
        if value:
            body[key] = value
    if accelerator:
        body["acceleratorConfig"] = parse_accelerator(accelerator, "'--accelerator'")
    if min_nodes is not None or max_nodes is not None:
        scaling = dict(body.get("autoScaling") or {})
        if min_nodes is not None:
            scaling["minNodes"] = min_nodes
        if max_nodes is not None:
            scaling["maxNodes"] = max_nodes
        body["autoScaling"] = scaling
        body.pop("manualScaling", None)
    if package_uris:
        body["packageUris"] = [_stage_package(c, project_of(project), version, p) for p in parse_list(package_uris)]
    if labels:
        body["labels"] = parse_key_values(labels, "--labels")
    body.update(monitoring_cli.fields(**monitoring, server_path=lambda uri: _server_path(c, uri, "--training-data")))
    operation = c.create_version(project_of(project), model, body)
    if run_async:
        output.status(f"Creating version [{version}] of model [{model}]: operation {operation['name']}")
        return
    with output.spinner("Creating version (this might take a few minutes)..."):
        c.wait_operation(operation)
    output.status(f"Created version [{version}] of model [{model}].")


def _stage_package(c: Any, project: str, version: str, uri: str) -> str:
    from mlengine.client.connection import same_machine
    from mlengine.client.staging import PackageStager, absolute_uri
    from mlengine.storage import uris

    uri = absolute_uri(uri)
    if not uris.is_local(uri):
        return uri
    if same_machine(c.server_info()):
        return uri
    return PackageStager(c, project, version).stage(Path(uris.local_path(uri)))


@versions.command("list")
@model_option
@project_option
@click.option("--filter", "filter_", metavar="EXPRESSION", default=None, help="Server-side filter (AIP-160).")
def list_versions(model: str, project: str | None, filter_: str | None) -> None:
    """List the versions of MODEL (NAME, STATE, FRAMEWORK, DEFAULT, DEPLOYMENT_URI).

    \b
    Examples:
      mle versions list --model taxifare
      mle versions list --model taxifare --format yaml
      mle versions list --model taxifare --format 'value(name.basename(),state)'
    """
    output.print_list(list(client().list_versions(project_of(project), model, filter=filter_)), VERSIONS_TABLE)


@versions.command()
@click.argument("version")
@model_option
@project_option
def describe(version: str, model: str, project: str | None) -> None:
    """Show version VERSION of MODEL.

    \b
    Examples:
      mle versions describe v1 --model taxifare
      mle versions describe v1 --model taxifare --format 'value(state)'
    """
    output.print_resource(client().get_version(project_of(project), model, version))


@versions.command()
@click.argument("version")
@model_option
@project_option
@click.option("--async", "run_async", is_flag=True, help="Return at once instead of waiting.")
def delete(version: str, model: str, project: str | None, run_async: bool) -> None:
    """Delete version VERSION of MODEL (stops its replicas, removes its files).

    Asks for confirmation on a terminal; --quiet does not ask.

    \b
    Examples:
      mle versions delete v1 --model taxifare
      mle versions delete v1 --model taxifare --quiet
    """
    confirm(f"This will delete version [{version}]...")
    c = client()
    operation = c.delete_version(project_of(project), model, version)
    if not run_async:
        with output.spinner("Deleting version..."):
            c.wait_operation(operation)
    output.status(f"Deleted version [{version}] of model [{model}].")


@versions.command("set-default")
@click.argument("version")
@model_option
@project_option
def set_default(version: str, model: str, project: str | None) -> None:
    """Make VERSION the default version of MODEL (used when a request names no version).

    \b
    Examples:
      mle versions set-default v2 --model taxifare
    """
    client().set_default_version(project_of(project), model, version)
    output.status(f"Version [{version}] is now the default version of model [{model}].")


@versions.command()
@click.argument("version")
@model_option
@project_option
@click.option("--description", default=None)
@click.option("--update-labels", metavar="KEY=VALUE,...", default=None)
@click.option("--remove-labels", metavar="KEY,...", default=None)
@click.option("--clear-labels", is_flag=True)
@click.option("--min-nodes", type=click.IntRange(min=0), default=None)
@click.option("--max-nodes", type=click.IntRange(min=1), default=None)
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="YAML or JSON with autoScaling/manualScaling/description/labels to apply.")
def update(version: str, model: str, project: str | None, description: str | None, update_labels: str | None,
           remove_labels: str | None, clear_labels: bool, min_nodes: int | None, max_nodes: int | None,
           config_path: str | None) -> None:
    """Update the description, labels or scaling of VERSION.

    \b
    Examples:
      mle versions update v1 --model taxifare --min-nodes 1 --max-nodes 4
      mle versions update v1 --model taxifare --update-labels stage=prod
    """
    c = client()
    name = project_of(project)
    body: dict[str, Any] = {}
    mask: list[str] = []
    if config_path:
        config = _load_config(config_path)
        for key in ("description", "labels", "autoScaling", "manualScaling"):
            if key in config:
                body[key], mask = config[key], [*mask, key]
    if description is not None:
        body["description"], mask = description, [*mask, "description"]
    if update_labels or remove_labels or clear_labels:
        current = {} if clear_labels else dict(c.get_version(name, model, version).get("labels") or {})
        for key in parse_list(remove_labels):
            current.pop(key, None)
        current.update(parse_key_values(update_labels, "--update-labels"))
        body["labels"], mask = current, [*mask, "labels"]
    if min_nodes is not None or max_nodes is not None:
        scaling = dict(body.get("autoScaling") or {})
        if min_nodes is not None:
            scaling["minNodes"] = min_nodes
            mask.append("autoScaling.minNodes")
        if max_nodes is not None:
            scaling["maxNodes"] = max_nodes
            mask.append("autoScaling.maxNodes")
        body["autoScaling"] = scaling
    if not mask:
        raise click.UsageError("Nothing to update: give --description, labels, --min-nodes/--max-nodes or --config.")
    c.wait_operation(c.patch_version(name, model, version, body, ",".join(dict.fromkeys(mask))))
    output.status(f"Updated version [{version}] of model [{model}].")


versions.add_command(monitoring_cli.logs)  # mle versions logs query
versions.add_command(monitoring_cli.monitoring)  # mle versions monitoring run|describe|history|report
