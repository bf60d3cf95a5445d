"""``mle auth``: access tokens, service accounts, and the server-wide IAM policy."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, project_of, project_option, settings
from mlengine.cli.iam import add_iam_commands, server_resource
from mlengine.client.connection import resolve_token

ROLES = ("viewer", "editor", "admin")
USERS_TABLE = "table(name, groups.join(','), roles.join(','):label=SERVER_ROLES, createTime.date():label=CREATED)"
TOKENS_TABLE = ("table(name, principal, groups.join(','), roles.join(','):label=SERVER_ROLES, "
                "createTime.date():label=CREATED)")


@click.group(cls=MleGroup)
def auth() -> None:
    """Manage access tokens, service accounts and the server-wide IAM policy.

    Every request carries a bearer token. A token speaks for a principal, user:NAME (by default
    its own name) or serviceAccount:ID@PROJECT.iam.mlengine, and may belong to groups
    (group:NAME); what it may do is what IAM policies grant them: the server-wide policy
    (every project; `mle auth get-iam-policy`), a project's (`mle projects ...`), a job's or a
    model's (`mle jobs|models ...-iam-policy...`). The server creates an admin token in
    MLE_HOME/admin_token when it first starts; clients use MLE_TOKEN when it is set.

    \b
    Examples:
      mle auth print-access-token
      mle auth create-token ci --role editor
      mle auth create-token ann --role none --group analysts
      mle auth create-service-account trainer
      mle auth create-token trainer-key --service-account trainer@mlengine.iam.mlengine
      mle auth list-tokens
      mle auth revoke-token ci
      mle auth add-iam-policy-binding --member group:analysts --role roles/ml.viewer
    """


@auth.command("print-access-token")
def print_access_token() -> None:
    """Print the access token this machine uses (MLE_TOKEN, else MLE_HOME/admin_token).

    \b
    Examples:
      mle auth print-access-token
      curl -H "Authorization: Bearer $(mle auth print-access-token)" \\
          http://127.0.0.1:8080/v1/projects/mlengine/jobs
    """
    click.echo(resolve_token(settings()))


def _role(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value in (*ROLES, "none") or value.startswith("roles/"):
        return value
    raise click.BadParameter(f"{value!r}: use {', '.join(ROLES)}, none, or a role such as roles/ml.developer")


@auth.command("create-token")
@click.argument("name")
@click.option("--role", metavar="ROLE", default="viewer", show_default=True, callback=_role,
              help="Role granted on the server-wide policy (every project): viewer (roles/ml.viewer), "
                   "editor (roles/ml.developer), admin (roles/ml.admin), any roles/... name, or none.")
@click.option("--user", metavar="USER", default=None, help="The user the token speaks for (default: NAME).")
@click.option("--group", "groups", metavar="GROUP", multiple=True,
              help="A group the token belongs to (repeat for several): bindings of group:GROUP apply to it.")
@click.option("--service-account", metavar="EMAIL", default=None,
              help="Make a token of this service account (ID@PROJECT.iam.mlengine) instead of a user's; "
                   "--role defaults to none then.")
def create_token(name: str, role: str, user: str | None, groups: tuple[str, ...], service_account: str | None
                 ) -> None:
    """Create an access token NAME and print it (it is shown only once).

    \b
    Examples:
      mle auth create-token alice --role editor
      export MLE_TOKEN=$(mle auth create-token ci --role editor)
      mle auth create-token bob-laptop --user bob --group analysts --role none
      mle auth create-token deployer --service-account deployer@mlengine.iam.mlengine
      mle auth create-token ci2 --role editor --format json
    """
    source = click.get_current_context().get_parameter_source("role")
    if service_account and source is click.core.ParameterSource.DEFAULT:
        role = "none"
    created = client().create_token(name, None if role == "none" else role, user=user, groups=groups,
                                    service_account=service_account)
    output.print_resource(created, _print_token)


def _print_token(created: dict[str, Any]) -> None:
    roles = ", ".join(created.get("roles") or []) or "no server-wide role"
    output.status(f"Created token [{created.get('name')}] for [{created.get('principal')}] ({roles}). "
                  "Store it now: it cannot be shown again.")
    click.echo(created["token"])


@auth.command("list-tokens")
def list_tokens() -> None:
    """List the access tokens (names, principals, server-wide roles; never the secrets).

    \b
    Examples:
      mle auth list-tokens
      mle auth list-tokens --format json
      mle auth list-tokens --format 'value(name)'
    """
    output.print_list(client().list_tokens(), TOKENS_TABLE)


@auth.command("revoke-token")
@click.argument("name")
def revoke_token(name: str) -> None:
    """Revoke the access token NAME; requests that present it fail from now on. The bindings of
    its principal stay (other tokens of the same user keep them).

    \b
    Examples:
      mle auth revoke-token ci
    """
    client().delete_token(name)
    output.status(f"Revoked token [{name}].")


@auth.command("create-service-account")
@click.argument("account_id")
@project_option
@click.option("--display-name", default="", help="A description of the account.")
def create_service_account(account_id: str, project: str | None, display_name: str) -> None:
    """Create service account ACCOUNT_ID@PROJECT.iam.mlengine, an identity jobs can run as
    (trainingInput.serviceAccount, `mle jobs submit training --service-account`).

    \b
    Examples:
      mle auth create-service-account trainer --display-name "nightly training"
      mle auth create-service-account deployer --project research
    """
    created = client().create_service_account(project_of(project), account_id, display_name)
    output.status(f"Created service account [{created['email']}].")


@auth.command("list-service-accounts")
@project_option
def list_service_accounts(project: str | None) -> None:
    """List the service accounts of a project.

    \b
    Examples:
      mle auth list-service-accounts --project mlengine
      mle auth list-service-accounts --format 'value(email)'
    """
    output.print_list(client().list_service_accounts(project_of(project)), "table(email, displayName)")


@auth.command("delete-service-account")
@click.argument("account_id")
@project_option
def delete_service_account(account_id: str, project: str | None) -> None:
    """Delete service account ACCOUNT_ID and revoke its tokens.

    \b
    Examples:
      mle auth delete-service-account trainer
    """
    client().delete_service_account(project_of(project), account_id)
    output.status(f"Deleted service account [{account_id}].")


add_iam_commands(auth, "", server_resource, "", "the server (bindings there apply to every project)",
                 "roles/ml.viewer", with_project=False)


@auth.group("users", cls=MleGroup)
def users() -> None:
    """Manage the people who sign in to the web console (/console) with a name and a password.

    A user speaks for user:NAME (and its groups); what it may do is what IAM grants them, like a
    token of the same user. Anyone with a token can also sign in with the token.

    \b
    Examples:
      mle auth users create ann --role editor
      printf '%s' "$PASSWORD" | mle auth users create ci-viewer --password-stdin
      mle auth users list
      mle auth users delete ann
    """


@users.command("create")
@click.argument("name")
@click.option("--role", metavar="ROLE", default="viewer", show_default=True, callback=_role,
              help="Role granted on the server-wide policy: viewer, editor, admin, any roles/... name, or none.")
@click.option("--group", "groups", metavar="GROUP", multiple=True, help="A group the user belongs to (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of prompting.")
def create_user(name: str, role: str, groups: tuple[str, ...], password_stdin: bool) -> None:
    """Create console user NAME with a password (asked for twice, or read from stdin).

    \b
    Examples:
      mle auth users create ann --role editor
      mle auth users create bob --role none --group analysts
    """
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    body: dict[str, Any] = {"name": name, "password": password, "role": role, "groups": list(groups)}
    created = client().request("POST", "/v1/users", json=body)
    output.print_resource(created, lambda u: output.status(
        f"Created user [{u.get('name')}] ({', '.join(u.get('roles') or []) or 'no server-wide role'}); "
        "they sign in at /console."))


@users.command("list")
def list_users() -> None:
    """List console users (names, groups, server-wide roles; never passwords).

    \b
    Examples:
      mle auth users list --format json
    """
    output.print_list(client().request("GET", "/v1/users").get("users", []), USERS_TABLE)


@users.command("delete")
@click.argument("name")
def delete_user(name: str) -> None:
    """Delete console user NAME and end their sessions.

    \b
    Examples:
      mle auth users delete ann
    """
    client().request("DELETE", f"/v1/users/{quote(name, safe='')}")
    output.status(f"Deleted user [{name}].")
