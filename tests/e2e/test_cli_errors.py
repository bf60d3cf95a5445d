"""Bad input through the CLI against a real server: a clear message, and nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.helpers import ECHO_TRAINER, ServerProcess, write_trainer

pytestmark = pytest.mark.e2e


def _jobs(server: ServerProcess) -> list[str]:
    return [j["jobId"] for j in server.api("GET", "/v1/projects/mlengine/jobs").json().get("jobs", [])]


def _submit(server: ServerProcess, job_id: str, *args: str):
    return server.mle("jobs", "submit", "training", job_id, "--region", "local", *args)


def test_package_without_init(server: ServerProcess, tmp_path: Path) -> None:
    pkg = tmp_path / "trainer"
    pkg.mkdir()
    (pkg / "task.py").write_text("print('hi')\n")
    result = _submit(server, "no_init", "--package-path", str(pkg), "--module-name", "trainer.task")
    assert result.returncode != 0
    assert "__init__.py" in result.stderr and "Traceback" not in result.stderr
    assert "no_init" not in _jobs(server)


def test_unbuildable_package(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path, ECHO_TRAINER)
    (tmp_path / "setup.py").write_text("raise SystemExit('setup.py is broken on purpose')\n")
    result = _submit(server, "unbuildable", "--package-path", str(tmp_path / "trainer"),
                     "--module-name", "trainer.task")
    assert result.returncode != 0
    assert "broken on purpose" in result.stderr and "Traceback" not in result.stderr
    assert "unbuildable" not in _jobs(server)


def test_malformed_config(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path, ECHO_TRAINER)
    config = tmp_path / "config.yaml"
    config.write_text("trainingInput:\n  scaleTier: [unclosed\n")
    result = _submit(server, "bad_config", "--package-path", str(tmp_path / "trainer"),
                     "--module-name", "trainer.task", "--config", str(config))
    assert result.returncode == 2
    assert "config.yaml" in result.stderr
    assert "bad_config" not in _jobs(server)


def test_unknown_scale_tier_and_bad_id(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path, ECHO_TRAINER)
    tier = _submit(server, "bad_tier", "--package-path", str(tmp_path / "trainer"),
                   "--module-name", "trainer.task", "--scale-tier", "HUGE_1")
    assert tier.returncode != 0 and "HUGE_1" in tier.stderr
    bad_id = _submit(server, "9lives", "--package-path", str(tmp_path / "trainer"),
                     "--module-name", "trainer.task")
    assert bad_id.returncode != 0 and "9lives" in bad_id.stderr
    assert not {"bad_tier", "9lives"} & set(_jobs(server))


def test_job_dir_with_unusable_scheme(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path, ECHO_TRAINER)
    result = _submit(server, "bad_scheme", "--package-path", str(tmp_path / "trainer"),
                     "--module-name", "trainer.task", "--job-dir", "gs://bucket/out")
    assert result.returncode != 0
    assert "gs" in result.stderr and "Traceback" not in result.stderr
    assert "bad_scheme" not in _jobs(server)


def test_stream_logs_exit_code_follows_the_job(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path, ECHO_TRAINER)
    ok = _submit(server, "streamed_ok", "--package-path", str(tmp_path / "trainer"),
                 "--module-name", "trainer.task", "--stream-logs")
    assert ok.returncode == 0, ok.stderr
    assert "hello from the trainer" in ok.stdout
    failed = _submit(server, "streamed_fail", "--package-path", str(tmp_path / "trainer"),
                     "--module-name", "trainer.task", "--stream-logs", "--", "--exit-code", "4")
    assert failed.returncode != 0
    assert "FAILED" in failed.stdout + failed.stderr
    cancel = server.mle("jobs", "cancel", "streamed_ok")
    assert cancel.returncode == 1 and "Cannot cancel an already completed job." in cancel.stderr
