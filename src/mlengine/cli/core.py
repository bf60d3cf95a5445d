"""What every ``mle`` command shares: gcloud-style errors, ``--project``, settings, client."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from mlengine.config import Settings, load_settings
from mlengine.errors import MLEngineError

if TYPE_CHECKING:
    from mlengine.client.http import Client

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """Printed as gcloud does: ``ERROR: (mle.jobs.submit.training) message``; exit code 1."""

    exit_code = 1

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"ERROR: ({self.command}) {self.message}", err=True)


class SettingsError(CommandError):
    """A bad ``MLE_*`` value: a usage error (exit 2), like a bad flag."""

    exit_code = 2


def dotted(ctx: click.Context) -> str:
    """``mle jobs submit training`` -> ``mle.jobs.submit.training``."""
    return ".".join(ctx.command_path.split())


def fail(message: str) -> CommandError:
    """A :class:`CommandError` for the running command."""
    ctx = click.get_current_context(silent=True)
    return CommandError(dotted(ctx) if ctx else "mle", message)


class MleCommand(click.Command):
    """Turns :class:`MLEngineError` into a one-line error (never a stack trace)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MLEngineError as err:
            raise CommandError(dotted(ctx), err.message) from None


class MleGroup(click.Group):
    """A group whose commands and subgroups report errors like gcloud."""

    command_class = MleCommand
    group_class = type  # subgroups are MleGroups too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MLEngineError as err:
            raise CommandError(dotted(ctx), err.message) from None


def settings() -> Settings:
    """Settings of this invocation (``MLE_*`` variables), loaded once per command."""
    ctx = click.get_current_context()
    cached = ctx.meta.get("mle.settings")
    if cached is None:
        try:
            cached = load_settings()
        except MLEngineError as err:
            raise SettingsError(dotted(ctx), err.message) from None
        ctx.meta["mle.settings"] = cached
    return cached


def client() -> Client:
    """A client of the server this invocation talks to, closed when the command ends."""
    from mlengine.client.http import Client

    ctx = click.get_current_context()
    made: Client = Client.from_settings(settings())
    ctx.call_on_close(made.close)
    return made


def project_option(func: F) -> F:
    """``--project``: the project of resource names (default: MLE_PROJECT or ``mlengine``)."""
    return click.option(
        "--project",
        metavar="PROJECT",
        default=None,
        help="Project of the resources (default: MLE_PROJECT, else 'mlengine').",
    )(func)


def project_of(value: str | None) -> str:
    return value or settings().project


def parse_key_values(text: str | None, option: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; a clear usage error otherwise."""
    result: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        result[key.strip()] = value.strip()
    return result


def parse_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
