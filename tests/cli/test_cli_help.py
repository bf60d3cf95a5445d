"""Every command has accurate help with examples, and `mle --help` stays fast."""

from __future__ import annotations

import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from mlengine.cli.main import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = all_commands(cli)


def test_command_tree() -> None:
    assert {" ".join(c) for c in COMMANDS} >= {
        "server start", "server stop", "server status",
        "auth print-access-token", "auth create-token", "auth list-tokens", "auth revoke-token",
        "jobs submit training", "jobs list", "jobs describe", "jobs stream-logs", "jobs cancel",
        "jobs update", "local train", "local predict",
        "models create", "models list", "models describe", "models delete",
        "versions create", "versions list", "versions describe", "versions delete",
        "versions set-default", "versions update", "predict",
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "mle")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="mle")
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"Usage: mle {' '.join(path)}".rstrip() in result.output
    for line in result.output.split("Examples:")[1].splitlines():
        if line.strip().startswith("mle "):
            assert line.strip().startswith(f"mle {path[0]}" if path else "mle "), line


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from mlengine.cli.main import cli;"
        "CliRunner().invoke(cli, ['--help']);"
        "heavy = ['httpx', 'rich', 'yaml', 'fsspec', 'fastapi', 'sqlalchemy', 'uvicorn',"
        " 'tensorflow', 'torch', 'ray'];"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_is_fast() -> None:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlengine.cli.main", "--help"], check=True,
                       capture_output=True)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"mle --help took {best:.2f} s"


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"], prog_name="mle")
    assert result.output.startswith("mle 0.")
