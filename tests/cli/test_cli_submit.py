"""`mle jobs submit training`: validation before anything is sent, the Job body, staging."""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from mle_fake_api import FakeMLServer

Run = Callable[..., Result]


def make_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        data = b"Metadata-Version: 1.0\nName: dep\nVersion: 1.0\n"
        info = tarfile.TarInfo("dep-1.0/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    return make_sdist(tmp_path / "dep-1.0.tar.gz")


def submit(mle: Run, *args: str) -> Result:
    return mle("jobs", "submit", "training", *args)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("job.yaml", "trainingInput: {scaleTier: BASIC\n", "not valid YAML"),
        ("job.json", '{"trainingInput": ', "not valid JSON"),
        ("job.yaml", "- a\n- b\n", "must hold a Job"),
        ("job.yaml", "trainingInput: [1, 2]\n", "trainingInput must be a mapping"),
        ("job.yaml", "trainingInput: {packageUris: gs://b/p.tar.gz}\n", "packageUris must be a list"),
    ],
)
def test_malformed_config_is_a_usage_error(
    mle: Run, fake: FakeMLServer, sdist: Path, tmp_path: Path, name: str, text: str, problem: str
) -> None:
    config = tmp_path / name
    config.write_text(text)
    result = submit(mle, "j1", "--config", str(config), "--module-name", "t.task",
                    "--packages", str(sdist))
    assert result.exit_code == 2, result.output
    assert str(config) in result.stderr and problem in result.stderr
    assert fake.requests == []


def test_missing_config_file(mle: Run, fake: FakeMLServer, tmp_path: Path) -> None:
    result = submit(mle, "j1", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "cannot read the file" in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1job"], "'1job' is not a valid job id"),
        (["my-job"], "'my-job' is not a valid job id"),
        (["j" * 129], "is not a valid job id"),
        (["j1"], "Missing option '--module-name'"),
        (["j1", "--module-name", "not a module"], "is not a Python module name"),
        (["j1", "--module-name", "t.task"], "Specify --package-path or --packages"),
        (["j1", "--module-name", "t.task", "--package-path", "/nonexistent"], "does not exist"),
        (["j1", "--module-name", "t.task", "--packages", "/nonexistent.tar.gz"],
         "package file /nonexistent.tar.gz does not exist"),
        (["j1", "--module-name", "t.task", "--stream-logs", "--async"], "cannot be used together"),
        (["j1", "--module-name", "t.task", "--scale-tier", "huge"], "'huge' is not one of"),
        (["j1", "--module-name", "t.task", "--labels", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_invalid_command_lines_send_nothing(
    mle: Run, fake: FakeMLServer, args: list[str], message: str
) -> None:
    result = submit(mle, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert fake.requests == []


def test_package_path_must_be_a_package(mle: Run, fake: FakeMLServer, tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    result = submit(mle, "j1", "--module-name", "t.task", "--package-path", str(tmp_path / "trainer"))
    assert result.exit_code == 2 and "has no __init__.py" in result.stderr
    assert fake.requests == []


def test_invalid_tier_setup_is_reported_before_sending(mle: Run, fake: FakeMLServer, sdist: Path) -> None:
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist),
                    "--scale-tier", "custom")
    assert result.exit_code == 1
    assert result.stderr.startswith("ERROR: (mle.jobs.submit.training) Field: trainingInput.masterType")
    assert fake.requests == []


def test_config_and_flags_make_the_body(
    mle: Run, fake: FakeMLServer, sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "trainingInput": {"scaleTier": "BASIC", "region": "us-central1", "args": ["--old"],
                          "pythonModule": "config.task", "runtimeVersion": "2.11"},
        "labels": {"team": "ml", "owner": "bob"},
    }))
    monkeypatch.chdir(tmp_path)
    result = submit(
        mle, "j1", "--config", str(config), "--module-name", "trainer.task", "--region", "local",
        "--labels", "owner=ann", "--packages", f"{sdist},gs://bucket/other.tar.gz",
        "--job-dir", "out", "--", "--epochs", "3", "--verbose",
    )
    assert result.exit_code == 0, result.output
    body = [r for r in fake.requests if r.method == "POST"][0].json()
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    staged = tmp_path / "out" / "packages" / digest / sdist.name
    assert body == {
        "jobId": "j1",
        "labels": {"team": "ml", "owner": "ann"},
        "trainingInput": {
            "scaleTier": "BASIC", "region": "local", "args": ["--epochs", "3", "--verbose"],
            "pythonModule": "trainer.task", "runtimeVersion": "2.11",
            "jobDir": str(tmp_path / "out"),
            "packageUris": [str(staged), "gs://bucket/other.tar.gz"],
        },
    }
    assert staged.read_bytes() == sdist.read_bytes()
    assert fake.uploads == {}
    assert "Job [j1] submitted successfully." in result.stderr
    assert "$ mle jobs stream-logs j1" in result.stderr
    assert yaml.safe_load(result.stdout) == {"jobId": "j1", "state": "QUEUED"}


def test_staging_bucket_and_custom_tier(mle: Run, fake: FakeMLServer, sdist: Path, tmp_path: Path) -> None:
    result = submit(
        mle, "j2", "--module-name", "t.task", "--packages", str(sdist),
        "--staging-bucket", str(tmp_path / "bucket"), "--scale-tier", "CUSTOM",
        "--master-machine-type", "standard", "--worker-machine-type", "standard",
        "--worker-count", "2", "--parameter-server-machine-type", "standard",
        "--parameter-server-count", "1", "--python-version", "3.11", "--async",
    )
    assert result.exit_code == 0, result.output
    ti = fake.jobs["j2"]["trainingInput"]
    assert ti["packageUris"][0].startswith(str(tmp_path / "bucket" / "j2" / "packages") + "/")
    assert (ti["workerCount"], ti["parameterServerCount"], ti["masterType"]) == ("2", "1", "standard")
    assert ti["pythonVersion"] == "3.11" and "args" not in ti


def test_another_machine_gets_an_upload(mle: Run, fake: FakeMLServer, sdist: Path, tmp_path: Path) -> None:
    fake.same_machine = False
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist),
                    "--job-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert fake.uploads == {sdist.name: sdist.read_bytes()}
    assert fake.jobs["j1"]["trainingInput"]["packageUris"][0].startswith("file:///srv/staging/")
    assert not (tmp_path / "out").exists()


def test_package_path_is_built_and_uploaded(mle: Run, fake: FakeMLServer, tmp_path: Path) -> None:
    trainer = tmp_path / "src" / "trainer"
    trainer.mkdir(parents=True)
    (trainer / "__init__.py").write_text("")
    (trainer / "task.py").write_text("print('hi')\n")
    result = submit(mle, "j1", "--module-name", "trainer.task", "--package-path", str(trainer))
    assert result.exit_code == 0, result.output
    assert list(fake.uploads) == ["trainer-0.0.0.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(fake.uploads["trainer-0.0.0.tar.gz"])) as tf:
        assert "trainer-0.0.0/trainer/task.py" in tf.getnames()


def test_server_errors_are_reported(mle: Run, fake: FakeMLServer, sdist: Path) -> None:
    fake.add_job("j1")
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist))
    assert result.exit_code == 1
    assert result.stderr.strip() == "ERROR: (mle.jobs.submit.training) Job projects/proj/jobs/j1 already exists."
    assert [r.method for r in fake.requests] == ["GET", "GET"]  # nothing uploaded or created


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELLED", 1)])
def test_stream_logs(
    mle: Run, fake: FakeMLServer, sdist: Path, final: str, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlengine.cli import streaming

    monkeypatch.setattr("mlengine.cli.submit.follow_logs",
                        functools.partial(streaming.stream_logs, interval=0.05))
    entry = {"timestamp": "2026-01-01T00:00:01Z", "severity": "INFO", "taskName": "master-replica-0"}
    fake.script["j1"] = [
        ("QUEUED", [], {"jobPosition": "1"}),
        ("PREPARING", [{**entry, "taskName": "service", "message": "Installing packages"}], {}),
        ("RUNNING", [{**entry, "message": "training"}], {}),
        (final, [], {"errorMessage": "boom"} if final != "SUCCEEDED" else {}),
    ]
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist), "--stream-logs")
    assert result.exit_code == code, result.output
    assert "2026-01-01T00:00:01Z INFO service Installing packages" in result.stdout
    assert "2026-01-01T00:00:01Z INFO master-replica-0 training" in result.stdout
    assert f"state: {final}" in result.stdout
    if code:
        assert f"Job [j1] ended in state {final}: boom" in result.stderr
