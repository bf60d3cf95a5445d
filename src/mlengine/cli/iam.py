"""IAM policy commands shaped like gcloud's, made once for every resource that has a policy:
``get-iam-policy``, ``set-iam-policy``, ``add-iam-policy-binding``, ``remove-iam-policy-binding``
(``mle jobs``, ``mle models``, ``mle projects``, and ``mle auth`` for the server-wide policy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import client, fail, project_of, project_option

#: ``(argument or None, --project or None) -> resource name`` (``projects/p/jobs/j``, ``server``).
Resolver = Callable[[str | None, str | None], str]


def parse_condition(text: str | None) -> dict[str, str] | None:
    """gcloud's ``--condition``: ``expression=EXPR,title=TITLE[,description=DESC]``, or ``None``."""
    if text is None or text.strip().lower() == "none":
        return None
    condition: dict[str, str] = {}
    key = None
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() in ("expression", "title", "description"):
            key = name.strip()
            condition[key] = value.strip()
        elif key is not None:  # a comma inside the previous value
            condition[key] += "," + part
        else:
            raise click.BadParameter(f"expected expression=...,title=..., got {text!r}", param_hint="--condition")
    if "expression" not in condition:
        raise click.BadParameter("needs expression=...", param_hint="--condition")
    return condition


def read_policy(path: Path) -> dict[str, Any]:
    """A policy from a JSON or YAML file: a Policy, or a SetIamPolicyRequest ``{"policy": ...}``."""
    import yaml

    try:
        text = path.read_text()
    except OSError as err:
        raise fail(f"Cannot read {path}: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise fail(f"{path} is not a JSON or YAML policy: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("policy"), dict):
        data = data["policy"]
    if not isinstance(data, dict):
        raise fail(f"{path} holds no policy (an object with bindings and etag)")
    return data


def add_iam_commands(group: click.Group, noun: str, resolve: Resolver, example: str, what: str,
                     role_example: str, with_project: bool = True) -> None:
    """Add the four commands to ``group``; ``noun`` is the argument's name (``JOB``) or ``""``
    for a group whose policy is one (the server's), ``example`` an argument for the examples,
    ``with_project`` whether ``--project`` names the argument's project."""
    argument: Callable[[Any], Any] = click.argument(noun.lower()) if noun else (lambda f: f)
    project: Callable[[Any], Any] = project_option if with_project else (lambda f: f)
    arg = f" {example}" if noun else ""
    prefix = f"mle {group.name}"

    def target(kwargs: dict[str, Any]) -> str:
        return resolve(kwargs.get(noun.lower()) if noun else None, kwargs.get("project"))

    @group.command("get-iam-policy", help=f"""Show the IAM policy of {what}.

    \b
    Examples:
      {prefix} get-iam-policy{arg}
      {prefix} get-iam-policy{arg} --format json > policy.json""")
    @argument
    @project
    def get_policy(**kwargs: Any) -> None:
        output.print_resource(client().get_iam_policy(target(kwargs), requested_version=3))

    @group.command("set-iam-policy", help=f"""Replace the IAM policy of {what} with POLICY_FILE
    (JSON or YAML, as get-iam-policy prints it). Its etag, when present, must still be the
    current one: a policy changed since it was read is not overwritten.

    \b
    Examples:
      {prefix} get-iam-policy{arg} --format json > policy.json
      # edit policy.json, then:
      {prefix} set-iam-policy{arg} policy.json""")
    @argument
    @click.argument("policy_file", type=click.Path(dir_okay=False, path_type=Path))
    @project
    def set_policy(policy_file: Path, **kwargs: Any) -> None:
        resource = target(kwargs)
        updated = client().set_iam_policy(resource, read_policy(policy_file))
        output.status(f"Updated IAM policy for [{resource}].")
        output.print_resource(updated)

    member_option = click.option("--member", required=True, metavar="MEMBER",
                                 help="user:NAME, group:NAME, serviceAccount:ID@PROJECT.iam.mlengine or "
                                      "allAuthenticatedUsers.")
    role_option = click.option("--role", required=True, metavar="ROLE",
                               help="e.g. roles/ml.modelUser, roles/ml.jobOwner, roles/ml.developer.")

    @group.command("add-iam-policy-binding", help=f"""Grant ROLE to MEMBER on {what}.

    \b
    Examples:
      {prefix} add-iam-policy-binding{arg} --member user:ann --role {role_example}
      {prefix} add-iam-policy-binding{arg} --member group:analysts --role roles/ml.viewer \\
          --condition 'expression=request.time < timestamp("2030-01-01T00:00:00Z"),title=until 2030'""")
    @argument
    @member_option
    @role_option
    @click.option("--condition", metavar="expression=EXPR,title=TITLE", default=None,
                  help='Grant only while request.time < timestamp("RFC 3339") holds.')
    @project
    def add_binding(member: str, role: str, condition: str | None, **kwargs: Any) -> None:
        resource = target(kwargs)
        updated = client().add_iam_policy_binding(resource, member, role, parse_condition(condition))
        output.status(f"Updated IAM policy for [{resource}].")
        output.print_resource(updated)

    @group.command("remove-iam-policy-binding", help=f"""Take ROLE away from MEMBER on {what}.

    \b
    Examples:
      {prefix} remove-iam-policy-binding{arg} --member user:ann --role roles/ml.viewer""")
    @argument
    @member_option
    @role_option
    @project
    def remove_binding(member: str, role: str, **kwargs: Any) -> None:
        resource = target(kwargs)
        updated = client().remove_iam_policy_binding(resource, member, role)
        output.status(f"Updated IAM policy for [{resource}].")
        output.print_resource(updated)


def job_resource(job: str | None, project: str | None) -> str:
    return f"projects/{project_of(project)}/jobs/{job}"


def model_resource(model: str | None, project: str | None) -> str:
    return f"projects/{project_of(project)}/models/{model}"


def project_resource(name: str | None, _project: str | None) -> str:
    return f"projects/{name}"


def server_resource(_name: str | None, _project: str | None) -> str:
    return "server"
