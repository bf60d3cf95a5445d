"""``mle predict`` (online prediction through the server) and the input/output helpers that
``mle local predict`` shares with it.

Inputs, as gcloud takes them (``-`` reads standard input):

- ``--json-instances FILE``: one JSON instance per line;
- ``--json-request FILE``: a whole request body ``{"instances": [...], ...}``;
- ``--text-instances FILE``: one string instance per line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import GcloudChoice, MleCommand, client, project_of, project_option, region_option


def input_options(func: Any) -> Any:
    for option in reversed([
        click.option("--json-instances", default=None, metavar="FILE",
                     help="File with one JSON instance per line ('-' for standard input)."),
        click.option("--json-request", default=None, metavar="FILE",
                     help="File with a JSON request body {\"instances\": [...]} ('-' for standard input)."),
        click.option("--text-instances", default=None, metavar="FILE",
                     help="File with one text instance per line ('-' for standard input)."),
        click.option("--signature-name", default=None, help="TensorFlow signature to call (default serving_default)."),
    ]):
        func = option(func)
    return func


def _read(path: str, option: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror or err}", param_hint=option) from None


def build_request(json_instances: str | None, json_request: str | None, text_instances: str | None,
                  signature_name: str | None) -> dict[str, Any]:
    given = [v for v in (json_instances, json_request, text_instances) if v is not None]
    if len(given) != 1:
        raise click.UsageError("Give exactly one of --json-instances, --json-request or --text-instances.")
    body: dict[str, Any]
    if json_request is not None:
        try:
            loaded = json.loads(_read(json_request, "--json-request"))
        except ValueError as err:
            raise click.BadParameter(f"{json_request} is not valid JSON: {err}", param_hint="--json-request") from None
        if not isinstance(loaded, dict) or "instances" not in loaded:
            raise click.BadParameter(f"{json_request} must hold an object with \"instances\"",
                                     param_hint="--json-request")
        body = loaded
    elif json_instances is not None:
        instances = []
        for number, line in enumerate(_read(json_instances, "--json-instances").splitlines(), 1):
            if line.strip():
                try:
                    instances.append(json.loads(line))
                except ValueError as err:
                    raise click.BadParameter(f"{json_instances} line {number} is not valid JSON: {err}",
                                             param_hint="--json-instances") from None
        body = {"instances": instances}
    else:
        lines = _read(text_instances or "-", "--text-instances").splitlines()
        body = {"instances": [line for line in lines if line.strip()]}
    if not body["instances"]:
        raise click.UsageError("The input holds no instances.")
    if signature_name:
        body["signature_name"] = signature_name
    return body


def print_predictions(result: dict[str, Any]) -> None:
    """The response ({"predictions": [...]}) as --format says; a table of the predictions by default."""
    output.print_resource(result, _prediction_table)


def _prediction_table(result: dict[str, Any]) -> None:
    predictions = result.get("predictions") or []
    if predictions and all(isinstance(p, dict) for p in predictions):
        keys = list(dict.fromkeys(k for p in predictions for k in p))
        rows = [{k: json.dumps(p.get(k)) if isinstance(p.get(k), (list, dict)) else p.get(k) for k in keys}
                for p in predictions]
        click.echo(output.table(rows, [(k.upper(), k) for k in keys]))
        return
    click.echo("PREDICTIONS")
    for p in predictions:
        click.echo(json.dumps(p))


@click.command(cls=MleCommand)
@click.option("--model", required=True, metavar="MODEL", help="The model to ask.")
@click.option("--version", default=None, metavar="VERSION", help="Its version (default: the default version).")
@project_option
@region_option
@input_options
def predict(model: str, version: str | None, project: str | None, json_instances: str | None,
            json_request: str | None, text_instances: str | None, signature_name: str | None) -> None:
    """Online prediction: send instances to a deployed model version.

    \b
    Examples:
      mle predict --model taxifare --json-instances instances.json
      mle predict --model taxifare --version v1 --json-request request.json --format json
      echo '[1.0, 2.0, 3.0]' | mle predict --model fares --json-instances -
    """
    body = build_request(json_instances, json_request, text_instances, signature_name)
    print_predictions(client().predict(project_of(project), model, body, version=version))


@click.command("predict", cls=MleCommand)
@click.option("--model-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of the exported model (saved_model.pb, model.joblib, model.bst, model.onnx, model.pt).")
@click.option("--framework", type=GcloudChoice(("TENSORFLOW", "SCIKIT_LEARN", "XGBOOST", "ONNX", "PYTORCH")),
              default=None,
              help="Framework of the model (default: detected from the files).")
@input_options
def local_predict(model_dir: str, framework: str | None, json_instances: str | None, json_request: str | None,
                  text_instances: str | None, signature_name: str | None) -> None:
    """Predict with a model on this machine, running the server's prediction code.

    Gives exactly what a version deployed from the same directory answers.

    \b
    Examples:
      mle local predict --model-dir /tmp/taxifare/export/1712345 --json-instances instances.json
      mle local predict --model-dir ./sk_model --json-instances - --format json < rows.json
    """
    from pathlib import Path

    from mlengine.prediction.local import predict_local

    body = build_request(json_instances, json_request, text_instances, signature_name)
    result = predict_local(Path(model_dir).absolute(), json.dumps(body).encode(), framework=framework)
    print_predictions(result)
