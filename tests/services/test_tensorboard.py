"""The tensorboard service kind (issue 13.3): the conformance suite, then one real TensorBoard
through the authenticated proxy showing a logdir's scalars, confined (no server secrets in its
environment, no_new_privs) and reachable only through the proxy (a local client or a confined
replica gets 403 and cannot read its key), and the remote-logdir copy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlengine.config import load_settings
from mlengine.errors import Code, MLEngineError
from mlengine.services import ServiceContext, ServiceInstance, ServiceKind
from mlengine.services._base import UPSTREAM_KEY_HEADER
from mlengine.services.kinds.tensorboard import (
    KEY_FILE,
    TensorBoardKind,
    ensure_job_tensorboard,
    ensure_tensorboard,
    job_service_name,
    logdir_service_name,
)
from mlengine.services.kinds.tensorboard_sync import sync_once
from mlengine.testing.services import PROJECT, ServiceKindConformance, service_harness


def write_scalars(logdir: Path, tag: str = "loss", steps: int = 5) -> None:
    """A real event file with ``steps`` scalar summaries (what tf.summary or Keras writes)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    for step in range(steps):
        value = Summary.Value(tag=tag, simple_value=1.0 / (step + 1))
        writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=[value])))
    writer.close()


class TestTensorBoardKind(ServiceKindConformance):
    @pytest.fixture
    def service_kind_class(self) -> type[ServiceKind]:
        return TensorBoardKind

    @pytest.fixture
    def service_spec(self, tmp_path: Path) -> dict[str, Any]:
        write_scalars(tmp_path / "logs" / "train")
        return {"logdir": str(tmp_path / "logs"), "idleTimeoutSeconds": 600}

    @pytest.fixture
    def invalid_specs(self) -> list[tuple[dict[str, Any], str]]:
        return [({}, "spec.logdir"), ({"logdir": ""}, "spec.logdir"), ({"logdir": "nope://x"}, "spec.logdir"),
                ({"logdir": "/srv/logs", "bogus": 1}, "spec.bogus"), ({"logdir": "/srv/logs", "job": "j"}, "spec.job"),
                ({"logdir": "/srv/logs", "idleTimeoutSeconds": -1}, "spec.idleTimeoutSeconds")]


def test_refuses_the_servers_own_files(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    kind = TensorBoardKind(ServiceContext(settings))
    with pytest.raises(MLEngineError) as info:
        kind.validate({"logdir": str(tmp_path / "home" / "jobs")})
    assert info.value.code is Code.INVALID_ARGUMENT and "spec.logdir" in info.value.message
    assert kind.validate({"logdir": f"file://{tmp_path}/x"})["logdir"] == f"{tmp_path}/x"


def test_a_remote_logdir_is_copied_outside_the_sandbox(tmp_path: Path) -> None:
    kind = TensorBoardKind(ServiceContext(load_settings(home=tmp_path / "home")))
    spec = kind.validate({"logdir": "memory://bucket/run1"})
    instance = ServiceInstance(project=PROJECT, name="tb", spec=spec, host="127.0.0.1", port=23456,
                               url_prefix=f"/v1/projects/{PROJECT}/services/tb/proxy/", directory=tmp_path / "svc")
    argv = kind.command(instance).argv
    assert argv[1:3] == ["-m", "mlengine.services.kinds.tensorboard_sync"]
    confined = argv[argv.index("--") + 1:]
    assert confined[:2] == ["env", "-i"] and "mlengine.core.confined" in confined
    assert confined[confined.index("--logdir") + 1] == str(tmp_path / "svc" / "cache")

    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/run1/train/events.out.1", b"abc")
    fs.pipe("/bucket/run1/eval/events.out.2", b"de")
    cache = tmp_path / "cache"
    assert sync_once("memory://bucket/run1", cache) == 2
    assert (cache / "train" / "events.out.1").read_bytes() == b"abc"
    assert sync_once("memory://bucket/run1", cache) == 0  # unchanged
    fs.pipe("/bucket/run1/train/events.out.1", b"abcdef")  # an event file grew
    assert sync_once("memory://bucket/run1", cache) == 1
    assert (cache / "train" / "events.out.1").read_bytes() == b"abcdef"
    assert sync_once("memory://bucket/none", tmp_path / "empty") == 0


def test_scalars_through_the_proxy_confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-secret")  # the server's; never TensorBoard's
    logdir = tmp_path / "job-dir"
    write_scalars(logdir / "train", tag="epoch_loss")
    with service_harness(TensorBoardKind) as h:
        row = ensure_job_tensorboard(h.manager, PROJECT, "job_1", {"jobDir": str(logdir)})
        assert row.name == job_service_name("job_1") == "tb-job_1"
        assert row.spec["job"] == f"projects/{PROJECT}/jobs/job_1"
        service = h.wait_state("tb-job_1", ("RUNNING", "FAILED"), 70)
        assert service["state"] == "RUNNING", service.get("errorMessage")
        prefix = service["proxyUrl"]
        deadline = time.monotonic() + 30
        while True:  # TensorBoard loads the logdir in the background
            tags = h.api("GET", prefix + "data/plugin/scalars/tags")
            if tags.status_code == 200 and tags.json().get("train") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "epoch_loss" in tags.json()["train"], tags.text
        series = h.api("GET", prefix + "data/plugin/scalars/scalars", params={"run": "train", "tag": "epoch_loss"})
        assert [point[1] for point in series.json()] == [0, 1, 2, 3, 4]

        # Only the proxy gets in: a local client, or a process confined like a trainer, reads nothing.
        port = int(h.handle("tb-job_1")["port"])
        direct = f"http://127.0.0.1:{port}{prefix}data/plugin/scalars/tags"
        assert httpx.get(direct, trust_env=False).status_code == 403
        assert httpx.get(direct, headers={UPSTREAM_KEY_HEADER: "guessed"}, trust_env=False).status_code == 403
        key_file = h.manager.directory(PROJECT, "tb-job_1") / KEY_FILE
        assert _as_a_trainer(h.context.settings, tmp_path, key_file, direct) == {"read": "PermissionError",
                                                                                  "GET": 403}

        pid = int(h.handle("tb-job_1")["pid"])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(item.startswith(b"AWS_SECRET_ACCESS_KEY") for item in environ)
        status = Path(f"/proc/{pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status  # it entered the sandbox before TensorBoard ran
        home = h.context.settings.home
        assert f"--logdir\0{logdir}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert home.exists()

        # Idempotent: the same service again, also once stopped (it is started).
        assert ensure_job_tensorboard(h.manager, PROJECT, "job_1", {"jobDir": str(logdir)}).id == row.id
        h.manager.stop_service(PROJECT, "tb-job_1")
        again = ensure_tensorboard(h.manager, PROJECT, "tb-job_1", str(logdir))
        assert again.state == "STARTING"
        with pytest.raises(MLEngineError) as info:
            ensure_job_tensorboard(h.manager, PROJECT, "job_2", {})
        assert info.value.code is Code.FAILED_PRECONDITION and "jobDir" in info.value.message
    assert logdir_service_name("gs://b/x") == logdir_service_name("gs://b/x") != logdir_service_name("gs://b/y")


PROBE = r"""
import json, sys, urllib.request, urllib.error
seen = {}
try:
    open(sys.argv[1]).read()
    seen["read"] = "ok"
except OSError as error:
    seen["read"] = type(error).__name__
try:
    seen["GET"] = urllib.request.urlopen(sys.argv[2], timeout=10).status
except urllib.error.HTTPError as error:
    seen["GET"] = error.code
print(json.dumps(seen))
"""


def _as_a_trainer(settings: Any, tmp_path: Path, key_file: Path, url: str) -> dict[str, Any]:
    """What a process confined with the replicas' hidden paths reads and gets from ``url``."""
    import subprocess
    import sys

    from mlengine.core.sandbox import SandboxPolicy
    from mlengine.jobs.sandboxing import hidden_paths

    work = tmp_path / "replica"
    (work / "home").mkdir(parents=True)
    (work / "tmp").mkdir()
    policy = SandboxPolicy(hidden=tuple(hidden_paths(settings)), writable=(str(work),),
                           private=(str(work / "home"), str(work / "tmp")))
    argv = [sys.executable, "-I", "-m", "mlengine.core.confined", policy.to_json(), "--",
            sys.executable, "-c", PROBE, str(key_file), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen


def test_it_stops_when_idle_by_default(tmp_path: Path) -> None:
    kind = TensorBoardKind(ServiceContext(load_settings(home=tmp_path / "home")))
    logs = str(tmp_path / "logs")
    assert kind.policy(kind.validate({"logdir": logs})).idle_timeout_seconds == 1800
    assert kind.policy(kind.validate({"logdir": logs, "idleTimeoutSeconds": 0})).idle_timeout_seconds is None
