"""``mle operations``: list, describe, wait for and cancel long-running operations
(``gcloud ai-platform operations``): version creation and deletion, model updates..."""

from __future__ import annotations

import itertools
import time
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, fail, project_of, project_option, region_option

#: The table of ``operations list``.
OPERATIONS_TABLE = ("table(name.basename():label=NAME, metadata.operationType:label=OPERATION_TYPE, done, "
                    "metadata.createTime.date():label=CREATED)")
POLL_SECONDS = (0.2, 2.0)


@click.group(cls=MleGroup)
def operations() -> None:
    """Inspect and cancel long-running operations (version creation and deletion, model updates).

    An operation is named by its id (the last part of projects/PROJECT/operations/ID) or its full
    name, as `mle versions create --async` prints it.

    \b
    Examples:
      mle operations list
      mle operations describe create_taxifare_v1-1712345678901
      mle operations wait create_taxifare_v1-1712345678901
      mle operations cancel create_taxifare_v1-1712345678901
    """


def operation_name(operation: str, project: str | None) -> str:
    """``projects/P/operations/ID`` for an id or a full name."""
    if operation.startswith("projects/"):
        parts = operation.split("/")
        if len(parts) != 4 or parts[2] != "operations" or not parts[1] or not parts[3]:
            raise click.BadParameter(f"{operation!r} is not projects/PROJECT/operations/ID or an id",
                                     param_hint="'OPERATION'")
        return operation
    if not operation or "/" in operation:
        raise click.BadParameter(f"{operation!r} is not an operation id", param_hint="'OPERATION'")
    return f"projects/{project_of(project)}/operations/{operation}"


@operations.command("list")
@project_option
@region_option
@click.option("--filter", "filter_", metavar="EXPRESSION", default=None,
              help="Server-side filter (AIP-160), e.g. 'done=false', 'metadata.operationType=CREATE_VERSION'.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many operations.")
def list_operations(project: str | None, filter_: str | None, limit: int | None) -> None:
    """List the operations of a project (NAME, OPERATION_TYPE, DONE, CREATED).

    \b
    Examples:
      mle operations list
      mle operations list --filter 'done=false'
      mle operations list --format 'value(name.basename())'
    """
    found = list(itertools.islice(client().list_operations(project_of(project), filter=filter_), limit))
    output.print_list(found, OPERATIONS_TABLE)


@operations.command()
@click.argument("operation")
@project_option
@region_option
def describe(operation: str, project: str | None) -> None:
    """Show operation OPERATION (its metadata, and its error or response once done).

    \b
    Examples:
      mle operations describe create_taxifare_v1-1712345678901
      mle operations describe create_taxifare_v1-1712345678901 --format 'value(done)'
    """
    output.print_resource(client().get_operation(operation_name(operation, project)))


@operations.command()
@click.argument("operation")
@project_option
@region_option
def wait(operation: str, project: str | None) -> None:
    """Wait until operation OPERATION is done, then show it.

    Exits 1 with the operation's error message when it failed or was cancelled.

    \b
    Examples:
      mle operations wait create_taxifare_v1-1712345678901
      mle operations wait create_taxifare_v1-1712345678901 --format 'value(response.state)'
    """
    c = client()
    name = operation_name(operation, project)
    current: dict[str, Any] = c.get_operation(name)
    interval, ceiling = POLL_SECONDS
    with output.spinner(f"Waiting for operation [{name}] to complete..."):
        while not current.get("done"):
            time.sleep(interval)
            interval = min(interval * 1.5, ceiling)
            current = c.get_operation(name)
    output.print_resource(current)
    error = current.get("error")
    if error:
        raise fail(str(error.get("message") or f"Operation [{name}] failed."))


@operations.command()
@click.argument("operation")
@project_option
@region_option
def cancel(operation: str, project: str | None) -> None:
    """Cancel operation OPERATION (only a version's creation can be cancelled).

    \b
    Examples:
      mle operations cancel create_taxifare_v1-1712345678901
    """
    name = operation_name(operation, project)
    client().cancel_operation(name)
    output.status(f"Cancelled operation [{name}].")
