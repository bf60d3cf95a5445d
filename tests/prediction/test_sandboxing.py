"""The sandbox of a model replica as the control plane computes it (the mechanism is tested in
tests/core; a real hostile routine in tests/e2e/test_serving_sandbox.py), and the local
backend's private directories."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mlengine.config import load_settings
from mlengine.prediction import sandboxing
from mlengine.prediction.backends import local
from mlengine.prediction.backends.local import LocalBackend
from mlengine.testing.replica_backends import Owner, ReplicaBackendSuite


def test_policy_hides_the_home_but_the_versions_own_files(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    settings = load_settings(home=home, sandbox_writable=(str(tmp_path / "scratch"), str(home / "jobs")))
    model_dir = home / "models" / "p" / "m" / "v1-3" / "model"
    env_site = home / "envs" / "abc123" / "site"
    private = home / "serving" / "replicas" / "r1-2-3"
    policy = sandboxing.replica_policy(settings, str(model_dir), [str(env_site), str(home / "jobs" / "x"),
                                                                   str(tmp_path / "code")], private)
    assert str(home) in policy.hidden and str(home / "mlengine.db") in policy.hidden
    assert os.path.expanduser("~/.ssh") in policy.hidden
    # Readable: its model, its whole environment, code outside; never another part of MLE_HOME.
    assert policy.readable == (str(model_dir), str(home / "envs" / "abc123"), str(tmp_path / "code"))
    # Writable: its private HOME and TMPDIR, and MLE_SANDBOX_WRITABLE outside the hidden paths.
    assert policy.private == (str(private / "home"), str(private / "tmp"))
    assert policy.writable == (str(tmp_path / "scratch"),)
    assert policy.landlock
    off = sandboxing.replica_policy(load_settings(home=home, sandbox="off"), str(model_dir), [], private)
    assert not off.landlock and off.private == policy.private and off.hidden == ()


def test_environment_is_the_allow_list_never_the_servers(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, sandbox_env=("HF_*",))
    host = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HF_HOME": "/data/hf", "MLE_TOKEN": "secret",
            "MLE_DATABASE_URL": "postgresql://u:pw@db/x", "AWS_SECRET_ACCESS_KEY": "k", "PYTHONPATH": "/server"}
    env = sandboxing.environment(settings, tmp_path / "r", {"PYTHONPATH": "/env/site"}, host=host)
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HF_HOME": "/data/hf", "HOME": str(tmp_path / "r" / "home"),
                   "TMPDIR": str(tmp_path / "r" / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1",
                   "PYTHONPATH": "/env/site"}


@pytest.mark.parametrize("zygotes", ["on", "off"])
def test_private_directories_are_removed_after_the_replica(tmp_path: Path, zygotes: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "PRIVATE_DIR_GRACE", 0.2)
    backend = LocalBackend(load_settings(home=tmp_path / "home", serving_zygotes=zygotes))
    leftover = backend.launcher.private_dir / "r1-1-1"  # a replica of a previous server
    (leftover / "home").mkdir(parents=True)

    async def scenario() -> None:
        try:
            await backend.reconcile([])
            assert not leftover.exists()
            channel = await backend.start_replica(ReplicaBackendSuite().template(tmp_path), Owner())
            private = [p for p in backend.launcher.private_dir.iterdir() if p.name.startswith("r")]
            assert len(private) == 1 and (private[0] / "home").is_dir() and (private[0] / "tmp").is_dir()
            channel.stop(kill_after=0.1)
            await ReplicaBackendSuite.until(lambda: not private[0].exists(), timeout=10)
        finally:
            await backend.close()

    asyncio.run(scenario())
