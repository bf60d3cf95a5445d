"""`mle models create` refuses what the server does not implement before sending anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlengine.cli.main import cli


@pytest.mark.parametrize(("flag", "field"), [("--enable-logging", "onlinePredictionLogging"),
                                             ("--enable-console-logging", "onlinePredictionConsoleLogging")])
def test_models_create_refuses_logging_flags_up_front(tmp_path: Path, flag: str, field: str) -> None:
    # Nothing listens on the discard port: a request would fail with a connection error instead.
    env = {"MLE_HOME": str(tmp_path), "MLE_API_URL": "http://127.0.0.1:9", "MLE_PROJECT": "p"}
    result = CliRunner().invoke(cli, ["models", "create", "fares", flag], env=env, prog_name="mle")
    assert result.exit_code == 2, result.output
    assert f"{flag}: request logging is not available yet" in result.output and field in result.output
    assert "connect" not in result.output.lower()
