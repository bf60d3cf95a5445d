from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))  # the shared fake API server

from mle_fake_api import TOKEN, FakeMLServer  # noqa: E402
from tests.client.conftest import fake  # noqa: E402,F401,F811 - the one fake-server fixture

from mlengine.cli.main import cli  # noqa: E402

Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def mle(fake: FakeMLServer, home: Path) -> Run:  # noqa: F811 - pytest injects the imported fixture
    """Run `mle ARGS` in-process against the fake server."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        base = {"MLE_HOME": str(home), "MLE_API_URL": fake.url, "MLE_TOKEN": TOKEN,
                "MLE_PROJECT": "proj"}
        return CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, prog_name="mle")

    return run
