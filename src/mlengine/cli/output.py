"""Printing resources (gcloud's ``--format``, see :mod:`.formats`), log lines and progress on
stderr.

Resources go to stdout; progress and status messages go to stderr, as gcloud does, so that
``mle jobs describe JOB --format json | jq`` and ``--format 'value(state)'`` work. Every command
that prints a resource or a list goes through :func:`print_resource` or :func:`print_list`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import click

from mlengine.cli import formats
from mlengine.cli.core import chosen_format


def _write(text: str) -> None:
    if text:
        click.echo(text, nl=False)


def _rendered(value: Any, fmt: formats.Format, *, many: bool, columns: Sequence[formats.Column] = ()) -> str:
    try:
        return formats.render(value, fmt, many=many, default_columns=columns)
    except formats.FormatError as err:
        raise click.BadParameter(str(err), param_hint="'--format'") from None


def print_resource(value: Any, default: str | Callable[[Any], None] = "yaml") -> None:
    """One resource on stdout: as ``--format`` says, else ``default`` (a format, or a function
    printing the command's own output)."""
    fmt = chosen_format()
    if fmt is None or (fmt.name in ("default", "table") and fmt.bare and not fmt.attrs and callable(default)):
        if callable(default):
            default(value)
            return
        fmt = formats.parse(default)
    _write(_rendered(value, fmt, many=False))


def print_list(items: Sequence[Any], table: str) -> None:
    """Resources on stdout: as ``--format`` says, else as ``table`` (a gcloud projection such as
    ``table(jobId, state:label=STATUS)``, also the columns of a bare ``csv`` or ``value``).
    An empty list says "Listed 0 items." on stderr, as gcloud does."""
    fmt = chosen_format() or formats.parse("table")
    if fmt.name == "default":
        fmt = formats.Format("table", fmt.attrs, fmt.columns, fmt.text)
    if not items and fmt.name in ("table", "csv", "value"):
        status("Listed 0 items.")
        return
    _write(_rendered(list(items), fmt, many=True, columns=formats.columns_of(table)))


def short_time(value: Any) -> str:
    """``2024-05-01T12:00:00.123456Z`` -> ``2024-05-01T12:00:00Z`` (tables only)."""
    text = str(value or "")
    if "." in text and text.endswith("Z"):
        return text.split(".", 1)[0] + "Z"
    return text


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A gcloud-like table: upper-case headers, columns separated by two spaces."""
    headers = [title for title, _ in columns]
    cells = [[str(row.get(key, "") if row.get(key) is not None else "") for _, key in columns]
             for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])


def format_entry(entry: Mapping[str, Any]) -> str:
    """``TIMESTAMP SEVERITY TASK message`` for one log entry."""
    return "{} {} {} {}".format(
        entry.get("timestamp", ""),
        entry.get("severity", "INFO"),
        entry.get("taskName", "-"),
        str(entry.get("message", "")).rstrip("\n"),
    )


def status(message: str) -> None:
    """A progress or status message on stderr."""
    click.echo(message, err=True)


class Progress:
    """A one-line progress indicator on stderr: a spinner on a terminal, plain lines
    (printed only when the text changes) otherwise. Call :meth:`pause` before printing."""

    def __init__(self) -> None:
        self._status: Any = None
        self._text: str | None = None
        self._tty = sys.stderr.isatty()

    def update(self, text: str) -> None:
        if text == self._text and (self._status is not None or not self._tty):
            return
        self._text = text
        if not self._tty:
            status(text)
            return
        if self._status is None:
            from rich.console import Console

            self._status = Console(stderr=True).status(text)
            self._status.start()
        else:
            self._status.update(text)

    def pause(self) -> None:
        """Remove the spinner (before other output); :meth:`update` brings it back."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def resume(self) -> None:
        """Show the last text again after :meth:`pause` (on a terminal)."""
        if self._text is not None and self._tty and self._status is None:
            text, self._text = self._text, None
            self.update(text)

    def stop(self) -> None:
        self.pause()
        self._text = None


@contextlib.contextmanager
def spinner(text: str) -> Iterator[Progress]:
    """``with spinner("Building package..."):`` shows ``text`` while the block runs."""
    progress = Progress()
    progress.update(text)
    try:
        yield progress
    finally:
        progress.stop()
