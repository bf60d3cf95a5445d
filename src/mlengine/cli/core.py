"""What every ``mle`` command shares: gcloud-style errors, the global flags (``--format``,
``--quiet``), ``--project`` and ``--region``, gcloud's spellings of choices, settings, client."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from mlengine.cli import formats
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


def _store_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        try:
            ctx.meta["mle.format"] = formats.parse(value)
        except formats.FormatError as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None


def _store_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["mle.quiet"] = True


def global_params() -> list[click.Parameter]:
    """gcloud's global flags, accepted by every command and group (before or after the command
    name); their values live in ``ctx.meta`` (shared by the whole invocation)."""
    return [
        click.Option(["--format"], metavar="FORMAT", expose_value=False, callback=_store_format,
                     help="Output format, as gcloud's: json, yaml, csv, value(...), table(...), "
                          "none, e.g. 'value(state)', 'table(jobId,state)', 'csv[no-heading](name)'."),
        click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=_store_quiet,
                     help="Disable prompts: answer every question with its default (deletes go ahead)."),
    ]


def _add_global_params(command: click.Command) -> None:
    names = {p.name for p in command.params}
    command.params += [p for p in global_params() if p.name not in names]


def chosen_format() -> formats.Format | None:
    """The ``--format`` of this invocation, or None (the command's own output)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.meta.get("mle.format") if ctx else None
    return found if isinstance(found, formats.Format) else None


def quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("mle.quiet"))


def interactive() -> bool:
    """Whether a person can answer a prompt (gcloud prompts only then)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm(message: str) -> None:
    """gcloud's prompt before a destructive change: skipped with ``--quiet`` or when nobody can
    answer (the default, yes, applies); a "no" aborts the command (exit 1)."""
    if quiet() or not interactive():
        return
    click.echo(message + "\n", err=True)
    if not click.confirm("Do you want to continue", default=True, err=True):
        raise fail("Aborted by user.")


class MleCommand(click.Command):
    """Turns :class:`MLEngineError` into a one-line error (never a stack trace); takes the
    global flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_params(self)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags = {opt for p in self.params if isinstance(p, BoolValueOption) for opt in p.opts}
        return super().parse_args(ctx, join_bool_values(args, flags) if flags else args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MLEngineError as err:
            raise CommandError(dotted(ctx), err.message) from None


class MleGroup(click.Group):
    """A group whose commands and subgroups report errors like gcloud."""

    command_class = MleCommand
    group_class = type  # subgroups are MleGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_params(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_global_params(cmd)  # also a command made with plain click.command
        super().add_command(cmd, name)

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


def region_option(func: F) -> F:
    """``--region``, accepted where gcloud accepts it. mlengine is one endpoint: the value is
    ignored (see :func:`recorded_region_option` for the commands that record it)."""
    return click.option("--region", metavar="REGION", default=None, expose_value=False,
                        help="Accepted for gcloud compatibility; mlengine has one endpoint (ignored).")(func)


def recorded_region_option(what: str) -> Callable[[F], F]:
    """``--region`` where the resource has a region field (``what``) that records it."""
    return click.option("--region", metavar="REGION", default=None,
                        help=f"Region, recorded as {what} (mlengine has one endpoint).")


class GcloudChoice(click.ParamType):
    """A choice spelled as gcloud accepts it: any case, ``-`` or ``_`` (``scikit-learn``,
    ``SCIKIT_LEARN``, ``Scikit_Learn``); the value is the API's enum spelling."""

    name = "choice"

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self._by_key = {self.key(c): c for c in self.choices}

    @staticmethod
    def key(text: str) -> str:
        return text.strip().upper().replace("-", "_")

    def shown(self) -> list[str]:
        return [c.lower().replace("_", "-") for c in self.choices]

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[" + "|".join(self.shown()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        found = self._by_key.get(self.key(str(value)))
        if found is None:
            self.fail(f"{value!r} is not one of {', '.join(self.shown())}.", param, ctx)
        return found


class BoolValueOption(click.Option):
    """A gcloud boolean flag: ``--flag``, ``--flag=true|false`` or ``--flag true|false``
    (:meth:`MleCommand.parse_args` joins the forms; a bare flag means true)."""


def bool_value_option(name: str, help: str) -> Callable[[F], F]:  # noqa: A002 - click's word
    return click.option(name, cls=BoolValueOption, type=click.BOOL, default=None, metavar="[true|false]",
                        help=help)


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}


def join_bool_values(args: list[str], flags: set[str]) -> list[str]:
    """``--flag`` alone -> ``--flag=true``; ``--flag false`` -> ``--flag=false`` (before ``--``)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg in flags:
            following = args[i + 1] if i + 1 < len(args) else None
            if following is not None and following.lower() in _BOOL_WORDS:
                out.append(f"{arg}={following}")
                i += 2
                continue
            out.append(f"{arg}=true")
        else:
            out.append(arg)
        i += 1
    return out


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


def parse_accelerator(text: str, option: str) -> dict[str, Any]:
    """gcloud's ``--accelerator type=nvidia-tesla-t4,count=1`` -> an AcceleratorConfig
    ``{"type": "NVIDIA_TESLA_T4", "count": 1}`` (count defaults to 1)."""
    spec = parse_key_values(text, option)
    if set(spec) - {"type", "count"} or "type" not in spec:
        raise click.BadParameter("expected type=TYPE[,count=N]", param_hint=option)
    try:
        count = int(spec.get("count", "1"))
    except ValueError:
        raise click.BadParameter(f"count must be an integer, got {spec['count']!r}", param_hint=option) from None
    return {"type": GcloudChoice.key(spec["type"]), "count": count}


def parse_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
