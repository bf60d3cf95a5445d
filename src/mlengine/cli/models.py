"""``mle models``: create, list, describe, delete, IAM policies (``gcloud ai-platform models``)."""

from __future__ import annotations

from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import (
    MleGroup,
    client,
    confirm,
    parse_key_values,
    parse_list,
    project_of,
    project_option,
    recorded_region_option,
    region_option,
)
from mlengine.cli.iam import add_iam_commands, model_resource

#: gcloud's table of ``models list``.
MODELS_TABLE = "table(name.basename(), defaultVersion.name.basename():label=DEFAULT_VERSION_NAME)"


@click.group(cls=MleGroup)
def models() -> None:
    """Create and manage models: named containers of versions that serve predictions.

    \b
    Examples:
      mle models create taxifare --description "NYC taxi fares"
      mle models list
      mle models describe taxifare
      mle models update taxifare --update-labels stage=prod
      mle models delete taxifare --quiet
      mle models add-iam-policy-binding taxifare --member group:analysts --role roles/ml.modelUser
    """


add_iam_commands(models, "MODEL", model_resource, "taxifare", "model MODEL", "roles/ml.modelUser")


@models.command()
@click.argument("model")
@project_option
@click.option("--description", default=None, help="Description of the model.")
@click.option("--labels", metavar="KEY=VALUE,...", default=None, help="Labels of the model.")
@click.option("--regions", metavar="REGION", default=None, help="regions of the model (at most one).")
@recorded_region_option("the model's regions unless --regions is given")
@click.option("--enable-logging", is_flag=True,
              help="Not available yet: prediction request logging is not implemented (refused).")
@click.option("--enable-console-logging", is_flag=True,
              help="Not available yet: replica console logging is not implemented (refused).")
def create(model: str, project: str | None, description: str | None, labels: str | None, regions: str | None,
           region: str | None, enable_logging: bool, enable_console_logging: bool) -> None:
    """Create model MODEL.

    \b
    Examples:
      mle models create taxifare --labels team=ml
      mle models create taxifare --region us-central1
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
    if regions or region:
        body["regions"] = parse_list(regions) if regions else [region]
    client().create_model(project_of(project), body)
    output.status(f"Created model [{model}].")


@models.command("list")
@project_option
@region_option
@click.option("--filter", "filter_", metavar="EXPRESSION", default=None, help="Server-side filter (AIP-160).")
def list_models(project: str | None, filter_: str | None) -> None:
    """List models (NAME, DEFAULT_VERSION_NAME).

    \b
    Examples:
      mle models list
      mle models list --filter 'labels.team=fares' --format json
      mle models list --format 'value(name.basename())'
    """
    output.print_list(list(client().list_models(project_of(project), filter=filter_)), MODELS_TABLE)


@models.command()
@click.argument("model")
@project_option
@region_option
def describe(model: str, project: str | None) -> None:
    """Show model MODEL (with its default version).

    \b
    Examples:
      mle models describe taxifare
      mle models describe taxifare --format json
      mle models describe taxifare --format 'value(defaultVersion.name.basename())'
    """
    output.print_resource(client().get_model(project_of(project), model))


@models.command()
@click.argument("model")
@project_option
@region_option
@click.option("--description", default=None, help="New description of the model.")
@click.option("--update-labels", metavar="KEY=VALUE,...", default=None, help="Labels to add or change.")
@click.option("--remove-labels", metavar="KEY,...", default=None, help="Labels to remove.")
@click.option("--clear-labels", is_flag=True, help="Remove all labels (before --update-labels).")
@click.option("--traffic-split", metavar="VERSION=PERCENT,...", default=None,
              help="Split calls on the model's name between versions (percents summing to 100).")
@click.option("--routing-key", metavar="NAME", default=None,
              help="Instance field or request header whose value makes the split sticky ('' clears it).")
@click.option("--shadow", metavar="VERSION,...", default=None,
              help="Versions that get a copy of the traffic, compared and never returned ('' clears them).")
@click.option("--canary", metavar="KEY=VALUE,...|JSON", default=None,
              help="Canary guards: stable=V,canary=V[,maxErrorRate=R,maxLatencyRatio=X,maxDisagreement=R,"
                   "windowSeconds=S,minRequests=N,promotionSteps=25:50:100,promotionIntervalSeconds=S] "
                   "('' clears it).")
@click.option("--clear-traffic", is_flag=True, help="Back to the default version answering every call.")
def update(model: str, project: str | None, description: str | None, update_labels: str | None,
           remove_labels: str | None, clear_labels: bool, traffic_split: str | None, routing_key: str | None,
           shadow: str | None, canary: str | None, clear_traffic: bool) -> None:
    """Update the description, labels or traffic of model MODEL.

    Labels are read, changed and written back guarded by the model's etag, so a concurrent
    change is refused instead of overwritten. Traffic options (an mlengine extension) take
    effect on the next call, without dropping one in flight.

    \b
    Examples:
      mle models update taxifare --description "NYC taxi fares, 2024"
      mle models update taxifare --update-labels stage=prod --remove-labels draft
      mle models update taxifare --clear-labels
      mle models update taxifare --traffic-split v1=90,v2=10 --shadow v3
      mle models update taxifare --traffic-split v1=90,v2=10 --routing-key user_id
      mle models update taxifare --traffic-split v1=95,v2=5 \\
          --canary stable=v1,canary=v2,maxErrorRate=0.02,promotionSteps=25:50:100,promotionIntervalSeconds=600
      mle models update taxifare --clear-traffic
    """
    c = client()
    name = project_of(project)
    body: dict[str, Any] = {}
    mask: list[str] = []
    if description is not None:
        body["description"], mask = description, [*mask, "description"]
    if update_labels or remove_labels or clear_labels:
        current = c.get_model(name, model)
        labels = {} if clear_labels else dict(current.get("labels") or {})
        for key in parse_list(remove_labels):
            labels.pop(key, None)
        labels.update(parse_key_values(update_labels, "--update-labels"))
        body["labels"], body["etag"] = labels, current.get("etag")
        mask.append("labels")
    traffic = _traffic_body(traffic_split, routing_key, shadow, canary, clear_traffic)
    body.update(traffic)
    mask += list(traffic)
    if not mask:
        raise click.UsageError("Nothing to update: give --description, --update-labels, --remove-labels, "
                               "--clear-labels or a traffic option (--traffic-split, --shadow, --canary).")
    c.wait_operation(c.patch_model(name, model, {k: v for k, v in body.items() if v is not None}, ",".join(mask)))
    output.status(f"Updated model [{model}].")


def _traffic_body(split: str | None, routing_key: str | None, shadow: str | None, canary: str | None,
                  clear: bool) -> dict[str, Any]:
    """The traffic fields of a model patch from the options (their names are the mask)."""
    body: dict[str, Any] = {}
    if clear:
        return {"trafficSplit": None, "routingKey": None, "shadowVersions": None, "canary": None}
    if split is not None:
        shares = parse_key_values(split, "--traffic-split")
        body["trafficSplit"] = {}
        for name, share in shares.items():
            if not str(share).isdigit():
                raise click.BadParameter(f"{name}={share}: the share must be an integer percent",
                                         param_hint="--traffic-split")
            body["trafficSplit"][name] = int(share)
    if routing_key is not None:
        body["routingKey"] = routing_key or None
    if shadow is not None:
        body["shadowVersions"] = parse_list(shadow) or None
    if canary is not None:
        body["canary"] = _canary(canary) if canary else None
    return body


_CANARY_NUMBERS = ("maxErrorRate", "maxLatencyRatio", "maxDisagreement", "windowSeconds",
                   "promotionIntervalSeconds")


def _canary(text: str) -> dict[str, Any]:
    """``--canary``: JSON, or ``key=value`` pairs (numbers where the field is one)."""
    import json

    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as err:
            raise click.BadParameter(f"not valid JSON: {err}", param_hint="--canary") from None
        if not isinstance(value, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--canary")
        return value
    out: dict[str, Any] = {}
    promotion: dict[str, Any] = {}
    for key, raw in parse_key_values(text, "--canary").items():
        try:
            if key == "promotionSteps":
                promotion["steps"] = [int(step) for step in str(raw).split(":") if step]
            elif key == "promotionIntervalSeconds":
                promotion["intervalSeconds"] = float(raw)
            elif key == "minRequests":
                out[key] = int(raw)
            elif key in _CANARY_NUMBERS:
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise click.BadParameter(f"{key}={raw}: must be a number", param_hint="--canary") from None
    if promotion:
        out["promotion"] = promotion
    return out


@models.command("traffic-status")
@click.argument("model")
@project_option
@region_option
def traffic_status(model: str, project: str | None) -> None:
    """Show what MODEL's traffic policy measured (mlengine extension): shadow versions'
    agreement and per-feature differences, the canary's windows and rollback reason.

    \b
    Examples:
      mle models traffic-status taxifare
      mle models traffic-status taxifare --format 'value(shadows.v3.agreementRate)'
    """
    output.print_resource(client().traffic_status(project_of(project), model))


@models.command()
@click.argument("model")
@project_option
@region_option
def delete(model: str, project: str | None) -> None:
    """Delete model MODEL (it must have no versions left).

    Asks for confirmation on a terminal; --quiet does not ask.

    \b
    Examples:
      mle models delete taxifare    # after `mle versions delete v1 --model taxifare`
      mle models delete taxifare --quiet
    """
    confirm(f"This will delete model [{model}]...")
    c = client()
    c.wait_operation(c.delete_model(project_of(project), model))
    output.status(f"Deleted model [{model}].")
