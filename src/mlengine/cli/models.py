"""``mle models``: create, list, describe, delete, IAM policies (``gcloud ai-platform models``)."""

from __future__ import annotations

from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, parse_key_values, parse_list, project_of, project_option
from mlengine.cli.iam import add_iam_commands, model_resource


@click.group(cls=MleGroup)
def models() -> None:
    """Create and manage models: named containers of versions that serve predictions.

    \b
    Examples:
      mle models create taxifare --description "NYC taxi fares"
      mle models list
      mle models describe taxifare
      mle models delete taxifare
      mle models add-iam-policy-binding taxifare --member group:analysts --role roles/ml.modelUser
    """


add_iam_commands(models, "MODEL", model_resource, "taxifare", "model MODEL", "roles/ml.modelUser")


@models.command()
@click.argument("model")
@project_option
@click.option("--description", default=None, help="Description of the model.")
@click.option("--labels", metavar="KEY=VALUE,...", default=None, help="Labels of the model.")
@click.option("--regions", metavar="REGION", default=None, help="Accepted for gcloud compatibility.")
@click.option("--enable-logging", is_flag=True,
              help="Not available yet: prediction request logging is not implemented (refused).")
@click.option("--enable-console-logging", is_flag=True,
              help="Not available yet: replica console logging is not implemented (refused).")
def create(model: str, project: str | None, description: str | None, labels: str | None, regions: str | None,
           enable_logging: bool, enable_console_logging: bool) -> None:
    """Create model MODEL.

    \b
    Examples:
      mle models create taxifare --labels team=ml
    """
    for given, flag, field in ((enable_logging, "--enable-logging", "onlinePredictionLogging"),
                               (enable_console_logging, "--enable-console-logging",
                                "onlinePredictionConsoleLogging")):
        if given:
            raise click.UsageError(f"{flag}: request logging is not available yet in mlengine (the server does "
                                   f"not implement {field}); create the model without it. Replica output "
                                   "stays in the replica log files on the server.")
    body: dict[str, Any] = {"name": model}
    if description:
        body["description"] = description
    if labels:
        body["labels"] = parse_key_values(labels, "--labels")
    if regions:
        body["regions"] = parse_list(regions)
    client().create_model(project_of(project), body)
    output.status(f"Created model [{model}].")


@models.command("list")
@project_option
@click.option("--filter", "filter_", metavar="EXPRESSION", default=None, help="Server-side filter (AIP-160).")
@click.option("--format", "fmt", type=click.Choice(output.FORMATS), default="table", show_default=True)
def list_models(project: str | None, filter_: str | None, fmt: str) -> None:
    """List models (NAME, DEFAULT_VERSION_NAME).

    \b
    Examples:
      mle models list
      mle models list --filter 'labels.team=fares' --format json
    """
    found = list(client().list_models(project_of(project), filter=filter_))
    if fmt != "table":
        output.emit(found, fmt)
        return
    if not found:
        output.status("Listed 0 items.")
        return
    rows = [{"name": m["name"].rsplit("/", 1)[-1],
             "default": (m.get("defaultVersion") or {}).get("name", "").rsplit("/", 1)[-1]} for m in found]
    click.echo(output.table(rows, [("NAME", "name"), ("DEFAULT_VERSION_NAME", "default")]))


@models.command()
@click.argument("model")
@project_option
@click.option("--format", "fmt", type=click.Choice(("yaml", "json")), default="yaml", show_default=True)
def describe(model: str, project: str | None, fmt: str) -> None:
    """Show model MODEL (with its default version).

    \b
    Examples:
      mle models describe taxifare
      mle models describe taxifare --format json
    """
    output.emit(client().get_model(project_of(project), model), fmt)


@models.command()
@click.argument("model")
@project_option
def delete(model: str, project: str | None) -> None:
    """Delete model MODEL (it must have no versions left).

    \b
    Examples:
      mle models delete taxifare    # after `mle versions delete v1 --model taxifare`
    """
    c = client()
    c.wait_operation(c.delete_model(project_of(project), model))
    output.status(f"Deleted model [{model}].")
