"""``mle auth``: access tokens (bearer tokens with a role) of the mlengine server."""

from __future__ import annotations

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, settings
from mlengine.client.connection import resolve_token

ROLES = ("viewer", "editor", "admin")


@click.group(cls=MleGroup)
def auth() -> None:
    """Manage access tokens of the mlengine server.

    Every request carries a bearer token with a role: viewer (read), editor (submit and
    manage jobs) or admin (also manage tokens). The server creates an admin token in
    MLE_HOME/admin_token when it first starts; clients use MLE_TOKEN when it is set.

    \b
    Examples:
      mle auth print-access-token
      mle auth create-token ci --role editor
      mle auth list-tokens
      mle auth revoke-token ci
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


@auth.command("create-token")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="What the token may do.")
@click.option("--format", "fmt", type=click.Choice(("text", "json", "yaml")), default="text",
              show_default=True, help="Output format.")
def create_token(name: str, role: str, fmt: str) -> None:
    """Create an access token NAME with a role and print it (it is shown only once).

    \b
    Examples:
      mle auth create-token alice --role editor
      export MLE_TOKEN=$(mle auth create-token ci --role editor)
    """
    created = client().create_token(name, role)
    if fmt != "text":
        output.emit(created, fmt)
        return
    output.status(
        f"Created token [{created.get('name', name)}] with role [{created.get('role', role)}]. "
        "Store it now: it cannot be shown again."
    )
    click.echo(created["token"])


@auth.command("list-tokens")
@click.option("--format", "fmt", type=click.Choice(output.FORMATS), default="table",
              show_default=True, help="Output format.")
def list_tokens(fmt: str) -> None:
    """List the access tokens (names and roles, never the secrets).

    \b
    Examples:
      mle auth list-tokens
      mle auth list-tokens --format json
    """
    tokens = client().list_tokens()
    if fmt != "table":
        output.emit(tokens, fmt)
        return
    if not tokens:
        output.status("Listed 0 items.")
        return
    click.echo(output.table(
        [{**t, "createTime": output.short_time(t.get("createTime"))} for t in tokens],
        [("NAME", "name"), ("ROLE", "role"), ("CREATED", "createTime")],
    ))


@auth.command("revoke-token")
@click.argument("name")
def revoke_token(name: str) -> None:
    """Revoke the access token NAME; requests that present it fail from now on.

    \b
    Examples:
      mle auth revoke-token ci
    """
    client().delete_token(name)
    output.status(f"Revoked token [{name}].")
