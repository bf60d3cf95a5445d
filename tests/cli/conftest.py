"""The CLI tests run `mle` in process (click's CliRunner) against the real control plane, also
running in process (tests/inprocess.py): `MLE_API_URL` names the in-process server, whose URL
the client routes to the app instead of the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.inprocess import client, inprocess_server, project, server, trainer_package  # noqa: F401

from mlengine.cli.main import cli
from mlengine.testing.inprocess import InProcessServer

Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The CLI's own MLE_HOME (the server has another)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def mle(server: InProcessServer, home: Path, project: str) -> Run:  # noqa: F811 - pytest injects fixtures
    """Run `mle ARGS` in process against the in-process server, in this test's project."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:  # noqa: A002
        base = {"MLE_HOME": str(home), **server.client_env(), "MLE_PROJECT": project}
        return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, prog_name="mle", input=input)

    return run
