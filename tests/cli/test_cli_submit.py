"""`mle jobs submit training` against the real control plane in process: validation before
anything is sent, the Job body, staging, streaming a real job's logs."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from tests.inprocess import wait_for_job

from mlengine.client.http import Client
from mlengine.testing.inprocess import InProcessServer

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
    mle: Run, server: InProcessServer, sdist: Path, tmp_path: Path, name: str, text: str, problem: str
) -> None:
    config = tmp_path / name
    config.write_text(text)
    result = submit(mle, "j1", "--config", str(config), "--module-name", "t.task",
                    "--packages", str(sdist))
    assert result.exit_code == 2, result.output
    assert str(config) in result.stderr and problem in result.stderr
    assert server.requests == []


def test_missing_config_file(mle: Run, server: InProcessServer, tmp_path: Path) -> None:
    result = submit(mle, "j1", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "cannot read the file" in result.stderr
    assert server.requests == []


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
    mle: Run, server: InProcessServer, args: list[str], message: str
) -> None:
    result = submit(mle, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert server.requests == []


def test_package_path_must_be_a_package(mle: Run, server: InProcessServer, tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    result = submit(mle, "j1", "--module-name", "t.task", "--package-path", str(tmp_path / "trainer"))
    assert result.exit_code == 2 and "has no __init__.py" in result.stderr
    assert server.requests == []


def test_invalid_tier_setup_is_reported_before_sending(mle: Run, server: InProcessServer, sdist: Path) -> None:
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist),
                    "--scale-tier", "custom")
    assert result.exit_code == 1
    assert result.stderr.startswith("ERROR: (mle.jobs.submit.training) Field: trainingInput.masterType")
    assert server.requests == []


def uploads(server: InProcessServer) -> dict[str, bytes]:
    """The package uploads this test sent: {file name: content}."""
    return {r.url.params["filename"]: r.content for r in server.requests if r.url.path.endswith("/packages:upload")}


def created_body(server: InProcessServer, project: str) -> dict:
    posts = [r for r in server.requests if r.method == "POST" and r.url.path == f"/v1/projects/{project}/jobs"]
    assert len(posts) == 1
    return json.loads(posts[0].content)


def test_config_and_flags_make_the_body(
    mle: Run, server: InProcessServer, client: Client, project: str, sdist: Path, trainer_package: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlengine.storage import uris

    remote = f"memory://bucket/{project}/trainer-0.0.0.tar.gz"  # the server is in this process: it reads it
    uris.put(trainer_package, remote)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "trainingInput": {"scaleTier": "BASIC", "region": "us-central1", "args": ["--old"],
                          "pythonModule": "config.task", "runtimeVersion": "2.11"},
        "labels": {"team": "ml", "owner": "bob"},
    }))
    monkeypatch.chdir(tmp_path)
    result = submit(
        mle, "j1", "--config", str(config), "--module-name", "trainer.task", "--region", "local",
        "--labels", "owner=ann", "--packages", f"{sdist},{remote}",
        "--job-dir", "out", "--", "--epochs", "3", "--verbose",
    )
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    staged = tmp_path / "out" / "packages" / digest / sdist.name
    expected_input = {
        "scaleTier": "BASIC", "region": "local", "args": ["--epochs", "3", "--verbose"],
        "pythonModule": "trainer.task", "runtimeVersion": "2.11",
        "jobDir": str(tmp_path / "out"),
        "packageUris": [str(staged), remote],
    }
    assert created_body(server, project) == {
        "jobId": "j1", "labels": {"team": "ml", "owner": "ann"}, "trainingInput": expected_input,
    }
    assert staged.read_bytes() == sdist.read_bytes()
    assert uploads(server) == {}
    assert "Job [j1] submitted successfully." in result.stderr
    assert "$ mle jobs stream-logs j1" in result.stderr
    assert yaml.safe_load(result.stdout) == {"jobId": "j1", "state": "QUEUED"}
    job = client.get_job(project, "j1")  # what the server stored
    assert job["labels"] == {"team": "ml", "owner": "ann"}
    assert {k: job["trainingInput"].get(k) for k in expected_input} == expected_input
    wait_for_job(client, project, "j1")


def test_staging_bucket_and_custom_tier(mle: Run, server: InProcessServer, client: Client, project: str,
                                        sdist: Path, tmp_path: Path) -> None:
    result = submit(
        mle, "j2", "--module-name", "t.task", "--packages", str(sdist),
        "--staging-bucket", str(tmp_path / "bucket"), "--scale-tier", "CUSTOM",
        "--master-machine-type", "standard", "--worker-machine-type", "standard",
        "--worker-count", "2", "--parameter-server-machine-type", "standard",
        "--parameter-server-count", "1", "--python-version", "3.11", "--async",
    )
    assert result.exit_code == 0, result.output
    ti = client.get_job(project, "j2")["trainingInput"]
    assert ti["packageUris"][0].startswith(str(tmp_path / "bucket" / "j2" / "packages") + "/")
    assert Path(ti["packageUris"][0]).read_bytes() == sdist.read_bytes()
    assert (ti["workerCount"], ti["parameterServerCount"], ti["masterType"]) == ("2", "1", "standard")
    assert ti["pythonVersion"] == "3.11"
    assert "args" not in created_body(server, project)["trainingInput"]
    wait_for_job(client, project, "j2")


def test_another_machine_gets_an_upload(mle: Run, server: InProcessServer, client: Client, project: str,
                                        sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client believes the server runs elsewhere: it cannot write a local --job-dir for it.
    monkeypatch.setattr("mlengine.client.staging.same_machine", lambda info: False)
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist),
                    "--job-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert uploads(server) == {sdist.name: sdist.read_bytes()}
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    stored = server.settings.staging_dir / digest / sdist.name
    assert client.get_job(project, "j1")["trainingInput"]["packageUris"] == [stored.as_uri()]
    assert stored.read_bytes() == sdist.read_bytes()
    assert not (tmp_path / "out").exists()
    wait_for_job(client, project, "j1")


def test_package_path_is_built_and_uploaded(mle: Run, server: InProcessServer, client: Client, project: str,
                                            tmp_path: Path) -> None:
    trainer = tmp_path / "src" / "trainer"
    trainer.mkdir(parents=True)
    (trainer / "__init__.py").write_text("")
    (trainer / "task.py").write_text("print('hi from the built package')\n")
    result = submit(mle, "j1", "--module-name", "trainer.task", "--package-path", str(trainer))
    assert result.exit_code == 0, result.output
    sent = uploads(server)
    assert list(sent) == ["trainer-0.0.0.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(sent["trainer-0.0.0.tar.gz"])) as tf:
        assert "trainer-0.0.0/trainer/task.py" in tf.getnames()
    assert wait_for_job(client, project, "j1")["state"] == "SUCCEEDED"  # the server ran what was built
    entries, _ = client.read_logs(project, "j1", task_name="master-replica-0")
    assert [e["message"] for e in entries] == ["hi from the built package"]


def test_server_errors_are_reported(mle: Run, server: InProcessServer, client: Client, project: str,
                                    sdist: Path, trainer_package: Path) -> None:
    from tests.inprocess import job_body

    client.create_job(project, job_body("j1", trainer_package))
    server.clear_requests()
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", str(sdist))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"ERROR: (mle.jobs.submit.training) Job projects/{project}/jobs/j1 already exists."
    assert [(r.method, r.url.path) for r in server.requests] == [  # nothing uploaded or created
        ("GET", "/v1/server"), ("GET", f"/v1/projects/{project}/jobs/j1")]
    wait_for_job(client, project, "j1")


def test_the_server_refuses_what_it_cannot_read(mle: Run, server: InProcessServer, project: str,
                                               sdist: Path) -> None:
    # gs:// needs gcsfs, which this server does not have: it says so, and nothing is created.
    result = submit(mle, "j1", "--module-name", "t.task", "--packages", f"{sdist},gs://bucket/other.tar.gz",
                    "--staging-bucket", "memory://stage")
    assert result.exit_code == 1
    assert "ERROR: (mle.jobs.submit.training) Field: trainingInput.packageUris[1]" in result.stderr
    assert "gs://" in result.stderr
    assert [r.method for r in server.requests if r.url.path.endswith("/jobs")] == ["POST"]
    missing = mle("jobs", "describe", "j1")
    assert missing.exit_code == 1 and "not found" in missing.stderr


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELLED", 1)])
def test_stream_logs(
    mle: Run, client: Client, project: str, trainer_package: Path, final: str, code: int,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlengine.cli import streaming

    monkeypatch.setattr("mlengine.cli.submit.follow_logs",
                        functools.partial(streaming.stream_logs, interval=0.05))
    args = {"SUCCEEDED": [], "FAILED": ["--exit-code", "4"], "CANCELLED": ["--sleep", "60"]}[final]
    canceller = threading.Thread(target=cancel_when_running, args=(client, project, "j1"), daemon=True)
    if final == "CANCELLED":  # another user cancels the job while the command follows it
        canceller.start()
    result = submit(mle, "j1", "--module-name", "trainer.task", "--packages", str(trainer_package),
                    "--stream-logs", "--", "--lines", "training", *args)
    if canceller.is_alive():
        canceller.join(timeout=30)
    assert result.exit_code == code, result.output
    lines = result.stdout.splitlines()
    assert any(line.endswith(" INFO service Validating job requirements... Job j1 submitted.") for line in lines)
    assert any(line.endswith(" INFO master-replica-0 training") for line in lines)
    assert f"state: {final}" in result.stdout
    if final == "FAILED":
        assert ("Job [j1] ended in state FAILED: The replica master-replica-0 exited with a non-zero "
                "status of 4.") in result.stderr
    if final == "CANCELLED":
        assert "Job [j1] ended in state CANCELLED" in result.stderr
    assert client.get_job(project, "j1")["state"] == final


def cancel_when_running(client: Client, project: str, job_id: str) -> None:
    import time

    from mlengine.errors import MLEngineError

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            entries, _ = client.read_logs(project, job_id, task_name="master-replica-0")
        except MLEngineError:  # not created yet
            entries = []
        if entries:  # the trainer printed its line: it is running
            client.cancel_job(project, job_id)
            return
        time.sleep(0.05)
