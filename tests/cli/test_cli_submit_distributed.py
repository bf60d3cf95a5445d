"""`mle jobs submit training` for distributed jobs: machine types, counts, accelerators (the
real control plane in process validates what the command sends)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from tests.inprocess import wait_for_job

from mlengine.client.http import Client
from mlengine.testing.inprocess import InProcessServer

Run = Callable[..., Result]


def sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        data = b"Metadata-Version: 1.0\nName: dep\nVersion: 1.0\n"
        info = tarfile.TarInfo("dep-1.0/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_custom_tier_with_accelerators_and_chief(mle: Run, server: InProcessServer, client: Client,
                                                 project: str, trainer_package: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("trainingInput:\n  masterConfig: {imageUri: ''}\n  evaluatorType: n1-standard-4\n")
    result = mle("jobs", "submit", "training", "dist", "--packages", str(trainer_package),
                 "--module-name", "trainer.task", "--config", str(config),
                 "--scale-tier", "custom", "--master-machine-type", "n1-standard-8",
                 "--master-accelerator", "type=nvidia-tesla-t4,count=2",
                 "--worker-machine-type", "n1-highcpu-16", "--worker-count", "2",
                 "--worker-accelerator", "type=nvidia-tesla-t4",
                 "--parameter-server-machine-type", "n1-highmem-8", "--parameter-server-count", "1",
                 "--use-chief-in-tf-config")
    assert result.exit_code == 0, result.output
    jobs_path = f"/v1/projects/{project}/jobs"
    sent = json.loads(next(r.content for r in server.requests if r.method == "POST" and r.url.path == jobs_path))
    stored = client.get_job(project, "dist")["trainingInput"]
    for ti in (sent["trainingInput"], stored):  # what the command sent is what the server kept
        assert ti["scaleTier"] == "CUSTOM" and ti["useChiefInTfConfig"] is True
        assert ti["masterConfig"] == {"imageUri": "", "acceleratorConfig": {"type": "NVIDIA_TESLA_T4", "count": 2}}
        assert ti["workerConfig"] == {"acceleratorConfig": {"type": "NVIDIA_TESLA_T4", "count": 1}}
        assert (ti["workerCount"], ti["parameterServerCount"], ti["parameterServerType"]) == (
            "2", "1", "n1-highmem-8")
        assert ti["evaluatorType"] == "n1-standard-4"
    # The server's executor (1 CPU slot, no GPUs) accepts the job, then says it can never run.
    ended = wait_for_job(client, project, "dist")
    assert ended["state"] == "FAILED"
    assert ended["errorMessage"].startswith("The job can never run here: its 4 replica(s) need 4 CPUs (has 1), "
                                            "4 GPUs (has 0)")


def test_bad_accelerator_flag(mle: Run, server: InProcessServer, client: Client, project: str,
                              tmp_path: Path) -> None:
    result = mle("jobs", "submit", "training", "bad", "--packages", str(sdist(tmp_path / "dep-1.0.tar.gz")),
                 "--module-name", "trainer.task", "--master-accelerator", "count=two,type=x")
    assert result.exit_code == 2
    assert "--master-accelerator" in result.stderr and "count must be an integer" in result.stderr
    assert server.requests == []
