"""The control plane's side of the trainers' sandbox (mlengine.jobs.sandboxing) and the
supervisor applying it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mlengine.config import load_settings
from mlengine.core import sandbox
from mlengine.core.sandbox import SandboxPolicy
from mlengine.errors import MLEngineError
from mlengine.jobs import sandboxing
from mlengine.jobs.executors import supervisor
from mlengine.jobs.kinds import SandboxPaths
from mlengine.jobs.paths import JobPaths


def test_hidden_paths_cover_home_database_credentials_and_settings(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "meta.db"
    settings = load_settings(home=tmp_path / "home", database_url=f"sqlite:///{db}",
                             sandbox_hidden=("/srv/secrets",))
    hidden = sandboxing.hidden_paths(settings)
    assert str(tmp_path / "home") in hidden
    assert {str(db), f"{db}-wal", f"{db}-shm", f"{db}-journal"} <= set(hidden)
    assert os.path.expanduser("~/.aws") in hidden and os.path.expanduser("~/.ssh") in hidden
    assert "/srv/secrets" in hidden
    postgres = load_settings(home=tmp_path / "home", database_url="postgresql://u:p@127.0.0.1/db")
    assert not any(h.endswith("-wal") for h in sandboxing.hidden_paths(postgres))
    assert sandboxing.sqlite_file("sqlite://") is None


def test_replica_policy_grants_own_dirs_and_screens_what_a_kind_adds(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", sandbox_writable=(str(tmp_path / "scratch"),))
    paths = JobPaths.of(settings, "p", "B")
    other = JobPaths.of(settings, "p", "A")
    workdir = paths.workdir("master-replica-0")
    env_dir = str(settings.envs_dir / "k" / "site")
    extra = SandboxPaths(readable=(env_dir, str(settings.token_file)),
                         writable=(str(paths.metric_file.parent), str(other.logs_dir), str(tmp_path / "jobdir")))
    logged: list[str] = []
    policy = sandboxing.replica_policy(settings, paths, "master-replica-0", workdir, extra,
                                       lambda message, *_: logged.append(message))
    real = os.path.realpath
    assert policy.landlock and real(str(settings.home)) in policy.hidden
    assert policy.private == (str(workdir), str(paths.home_dir("master-replica-0")),
                              str(paths.tmp_dir("master-replica-0")))
    assert policy.readable == (real(env_dir),)  # the job's environment, not the admin token
    assert set(policy.writable) == {real(str(tmp_path / "scratch")), real(str(paths.metric_file.parent)),
                                    real(str(tmp_path / "jobdir"))}  # not another job's logs
    assert logged and str(other.logs_dir) in logged[0] and str(settings.token_file) in logged[0]
    off = sandboxing.replica_policy(load_settings(home=tmp_path / "home", sandbox="off"), paths,
                                    "master-replica-0", workdir, extra)
    assert off == SandboxPolicy(private=policy.private, landlock=False)


def test_job_dir_must_be_writable_by_trainers(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", sandbox_writable=(str(tmp_path / "data"),))
    assert sandboxing.job_dir_problem(settings, tmp_path / "data" / "run1") is None
    outside = sandboxing.job_dir_problem(settings, tmp_path / "elsewhere")
    assert outside and "MLE_SANDBOX_WRITABLE" in outside
    inside = sandboxing.job_dir_problem(settings, tmp_path / "home" / "jobs")
    assert inside and "private files" in inside
    default = load_settings(home=tmp_path / "home")
    assert default.sandbox_writable_paths == (os.path.realpath(__import__("tempfile").gettempdir()),)
    assert sandboxing.job_dir_problem(load_settings(home=tmp_path / "home", sandbox="off"), Path("/etc")) is None


def test_the_server_refuses_to_start_without_landlock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    with pytest.raises(MLEngineError, match="MLE_SANDBOX=landlock .*set MLE_SANDBOX=off"):
        sandboxing.check_supported(load_settings(home=tmp_path))
    sandboxing.check_supported(load_settings(home=tmp_path, sandbox="off"))
    # a remote Ray cluster: each node's supervisor checks instead
    sandboxing.check_supported(load_settings(home=tmp_path, executor="ray", ray_address="10.0.0.1:6379"))


def test_inherited_env_adds_the_configured_names(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, sandbox_env=("HF_HOME", "WANDB_*"))
    assert sandboxing.inherited_env(settings)[-2:] == ("HF_HOME", "WANDB_*")
    assert "PATH" in sandboxing.inherited_env(settings)


def test_supervisor_never_starts_an_unconfinable_trainer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    status, log = tmp_path / "status.json", tmp_path / "log.jsonl"
    marker = tmp_path / "ran"
    code = supervisor.main([
        "--task-name", "master-replica-0", "--log-file", str(log), "--status-file", str(status),
        "--cwd", str(tmp_path), "--sandbox", SandboxPolicy(hidden=(str(tmp_path / "h"),)).to_json(),
        "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
    ])
    assert code == 126 and not marker.exists()
    recorded = json.loads(status.read_text())
    assert recorded["exitCode"] == 126 and "MLE_SANDBOX=landlock" in recorded["message"]
    assert "cannot be confined" in log.read_text()
