"""Distributed training on a real server, once with the local executor and once with a real
two-node Ray cluster on this machine (nodes at 127.0.0.2 and 127.0.0.3 with the custom
resources node_a and node_b): TensorFlow ParameterServerStrategy (chief, 2 workers, 1 ps) and
PyTorch DDP (gloo) on the taxi data, a killed worker, cancel, concurrent jobs, and (Ray) a
control plane killed with -9 and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import REPO, ServerProcess, _kill_leftovers, short_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JOBS = "/v1/projects/mlengine/jobs"
DATA = REPO / "samples" / "taxifare" / "data" / "taxi-train.csv"
MACHINE_TYPES = "tiny: {cpus: 1, memoryGb: 0.5}\nhalf: {cpus: 0.5, memoryGb: 0.25}\n"


class Backend:
    def __init__(self, name: str, server: ServerProcess, ray: Any = None) -> None:
        self.name, self.server, self.ray = name, server, ray


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlengine.core.packaging import build_sdist

    return build_sdist(REPO / "tests" / "e2e" / "disttrainer" / "disttrainer",
                       tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module", params=["local", "ray"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    home = short_home()
    (home / "machine_types.yaml").write_text(MACHINE_TYPES)
    if request.param == "local":
        server = ServerProcess(home, {"MLE_CAPACITY_SLOTS": "8"}).start()
        try:
            yield Backend("local", server)
        finally:
            server.stop()
            _kill_leftovers(home)
        return
    from tests.raycluster import start_cluster, use_in_this_process

    cluster = start_cluster([(2, {"node_a": 1}), (2, {"node_b": 1})])
    server = None
    try:
        use_in_this_process(cluster)
        import ray

        ray.init(address=cluster.address, log_to_driver=False)
        server = ServerProcess(home, cluster.env).start()
        yield Backend("ray", server, ray)
    finally:
        if server is not None:
            server.stop()
            _kill_leftovers(home)
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


def submit(server: ServerProcess, job_id: str, package: Path, module: str, args: list[str],
           **training: Any) -> None:
    body = {"jobId": job_id, "trainingInput": {
        "packageUris": [str(package)], "pythonModule": module, "region": "local", "args": args,
        "scaleTier": "CUSTOM", "masterType": "tiny", **training}}
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text


def wait_records(out: Path, names: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((out / f"{n}.json").exists() for n in names):
            return {n: json.loads((out / f"{n}.json").read_text()) for n in names}
        time.sleep(0.1)
    raise AssertionError(f"replicas never started: {sorted(p.name for p in out.glob('*'))}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_ray_free(backend: Backend, timeout: float = 30) -> None:
    """Every CPU of the cluster is available again and no placement group is left."""
    ray = backend.ray
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
        if ray.available_resources().get("CPU", 0) == 4 and not groups:
            return
        time.sleep(0.2)
    raise AssertionError(f"Ray resources not freed: {ray.available_resources()}, {groups}")


def test_tensorflow_parameter_server_strategy(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    submit(server, "tf_ps", package, "disttrainer.tf_ps", ["--data", str(DATA), "--steps", "30"],
           useChiefInTfConfig=True, workerType="tiny", workerCount="2", parameterServerType="tiny",
           parameterServerCount="1", jobDir=str(tmp_path / "out"))
    job = server.wait_state("tf_ps", ("SUCCEEDED", "FAILED"), timeout=300)
    assert job["state"] == "SUCCEEDED", job
    result = json.loads((tmp_path / "out" / "tf_ps_result.json").read_text())
    assert result["workers"] == 2 and result["ps"] == 1
    assert result["variable_device"].startswith("/job:ps/")
    assert result["last_loss"] < result["first_loss"]
    ps_logs = server.logs("tf_ps", "ps-replica-0")
    assert ps_logs and {e["taskName"] for e in ps_logs} == {"ps-replica-0"}
    assert any("ps 0 serving" in e["message"] for e in ps_logs)
    chief = [e["message"] for e in server.logs("tf_ps", "chief-replica-0")]
    cluster_line = next(m for m in chief if m.startswith("chief 0 starting"))
    if backend.name == "ray":  # 4 replicas of 1 CPU on two 2-CPU nodes: both nodes are used
        assert "127.0.0.2:" in cluster_line and "127.0.0.3:" in cluster_line, cluster_line
        wait_ray_free(backend)


def test_pytorch_ddp_gloo(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    submit(server, "ddp", package, "disttrainer.torch_ddp", ["--data", str(DATA), "--epochs", "1"],
           workerType="tiny", workerCount="2", jobDir=str(tmp_path / "out"))
    job = server.wait_state("ddp", ("SUCCEEDED", "FAILED"), timeout=240)
    assert job["state"] == "SUCCEEDED", job
    result = json.loads((tmp_path / "out" / "torch_ddp_result.json").read_text())
    assert result["world_size"] == 3 and result["in_sync"] is True
    assert result["last_loss"] < result["first_loss"]
    messages = [e["message"] for e in server.logs("ddp", "worker-replica-1")]
    assert any(m.startswith("rank 2 of 3 joined") for m in messages), messages


def test_killed_worker_fails_the_job(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    out = tmp_path / "records"
    submit(server, "killed", package, "disttrainer.sleeper", ["--out", str(out), "--sleep", "600"],
           workerType="tiny", workerCount="2")
    records = wait_records(out, ["master-replica-0", "worker-replica-0", "worker-replica-1"])
    os.kill(records["worker-replica-1"]["pid"], signal.SIGKILL)
    job = server.wait_state("killed", ("FAILED", "SUCCEEDED"), timeout=60)
    assert job["state"] == "FAILED"
    assert "worker-replica-1" in job["errorMessage"] and "SIGKILL" in job["errorMessage"], job
    deadline = time.monotonic() + 20
    while any(pid_alive(r["pid"]) for r in records.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(r["pid"]) for r in records.values()), "the rest of the job is stopped"
    if backend.ray:
        wait_ray_free(backend)


def test_cancel_frees_everything(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    out = tmp_path / "records"
    submit(server, "cancelled", package, "disttrainer.sleeper", ["--out", str(out), "--sleep", "600"],
           workerType="tiny", workerCount="2", parameterServerType="tiny", parameterServerCount="1")
    names = ["master-replica-0", "worker-replica-0", "worker-replica-1", "ps-replica-0"]
    records = wait_records(out, names)
    ranks = {n: records[n]["env"]["RANK"] for n in names}
    assert ranks == {"master-replica-0": "0", "worker-replica-0": "1", "worker-replica-1": "2", "ps-replica-0": None}
    cluster_spec = records["ps-replica-0"]["tf_config"]["cluster"]
    assert sorted(cluster_spec) == ["master", "ps", "worker"]
    assert len({a for addresses in cluster_spec.values() for a in addresses}) == 4  # distinct ports
    server.api("POST", f"{JOBS}/cancelled:cancel", json={})
    server.wait_state("cancelled", ("CANCELLED",), timeout=30)
    assert not any(pid_alive(r["pid"]) for r in records.values())
    if backend.ray:
        wait_ray_free(backend)


def test_concurrent_jobs_do_not_collide(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    for job_id in ("para_a", "para_b"):
        submit(server, job_id, package, "disttrainer.torch_ddp", ["--data", str(DATA), "--epochs", "3"],
               masterType="half", workerType="half", workerCount="2", jobDir=str(tmp_path / job_id))
    jobs = [server.wait_state(j, ("SUCCEEDED", "FAILED"), timeout=240) for j in ("para_a", "para_b")]
    assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs
    assert jobs[0]["startTime"] < jobs[1]["endTime"] and jobs[1]["startTime"] < jobs[0]["endTime"], \
        "the two jobs ran at the same time"
    endpoints = set()
    for job_id in ("para_a", "para_b"):
        for task in ("master-replica-0", "worker-replica-0", "worker-replica-1"):
            joined = [e["message"] for e in server.logs(job_id, task) if " joined via " in e["message"]]
            endpoints.add((job_id, joined[0].rsplit(" ", 1)[1]))
    rendezvous = {job: ep for job, ep in endpoints}
    assert len(endpoints) == 2 and rendezvous["para_a"] != rendezvous["para_b"], endpoints
    if backend.ray:
        wait_ray_free(backend)


def test_control_plane_restart_reconciles(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    out = tmp_path / "records"
    submit(server, "survives", package, "disttrainer.sleeper", ["--out", str(out), "--sleep", "6"],
           workerType="tiny", workerCount="1")
    records = wait_records(out, ["master-replica-0", "worker-replica-0"])
    server.kill9()
    assert all(pid_alive(r["pid"]) for r in records.values()), "replicas outlive the control plane"
    server.start()
    job = server.wait_state("survives", ("SUCCEEDED", "FAILED"), timeout=60)
    assert job["state"] == "SUCCEEDED", job
    deadline = time.monotonic() + 20
    while pid_alive(records["worker-replica-0"]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(records["worker-replica-0"]["pid"]), "the worker is stopped once the master succeeded"
    if backend.ray:
        wait_ray_free(backend)


def test_capacity_queues_or_refuses(backend: Backend, package: Path, tmp_path: Path) -> None:
    server = backend.server
    cpus = 8 if backend.name == "local" else 4  # MLE_CAPACITY_SLOTS / the two 2-CPU Ray nodes
    out = tmp_path / "records"
    submit(server, "fills_all", package, "disttrainer.sleeper", ["--out", str(out), "--sleep", "600"],
           workerType="tiny", workerCount=str(cpus - 1))
    wait_records(out, ["master-replica-0", f"worker-replica-{cpus - 2}"])
    submit(server, "waits", package, "disttrainer.sleeper", ["--out", str(tmp_path / "w"), "--sleep", "0"])
    submit(server, "too_big", package, "disttrainer.sleeper", ["--out", str(tmp_path / "t")],
           workerType="tiny", workerCount=str(cpus))
    submit(server, "needs_gpu", package, "disttrainer.sleeper", ["--out", str(tmp_path / "g")],
           masterConfig={"acceleratorConfig": {"count": 1, "type": "NVIDIA_TESLA_T4"}})
    if backend.ray:  # machine mode; the local executor runs it alone, later (issue 10.2)
        too_big = server.wait_state("too_big", ("FAILED",), timeout=30)
        assert f"need {cpus + 1} CPUs (has {cpus})" in too_big["errorMessage"], too_big
    gpu = server.wait_state("needs_gpu", ("FAILED",), timeout=30)
    assert "1 GPUs (has 0)" in gpu["errorMessage"], gpu
    time.sleep(1)
    waiting = server.job("waits")
    assert waiting["state"] == "QUEUED" and waiting["jobPosition"] == "1", waiting
    server.api("POST", f"{JOBS}/fills_all:cancel", json={})
    assert server.wait_state("waits", ("SUCCEEDED", "FAILED"), timeout=120)["state"] == "SUCCEEDED"
    if not backend.ray:
        assert server.wait_state("too_big", ("SUCCEEDED", "FAILED"), timeout=120)["state"] == "SUCCEEDED"
    response = server.api("POST", JOBS, json={"jobId": "unknown_type", "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "disttrainer.sleeper", "scaleTier": "CUSTOM",
        "masterType": "tiny", "workerType": "n9-imaginary-4", "workerCount": "1"}})
    assert response.status_code == 400
    assert "trainingInput.workerType" in response.json()["error"]["message"]
    if backend.ray:
        wait_ray_free(backend)


def test_tuning_trials_run_on_the_executor(backend: Backend, tmp_path: Path) -> None:
    from tests.e2e.helpers import build_package, write_trainer
    from tests.e2e.tuning_trainer import TRAINER

    write_trainer(tmp_path / "src", TRAINER)
    package = build_package(tmp_path / "src")
    spec = {"goal": "MINIMIZE", "hyperparameterMetricTag": "loss", "maxTrials": 2, "maxParallelTrials": 2,
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]}
    body = {"jobId": "tuned", "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local",
        "args": ["--record", str(tmp_path / "rec")], "scaleTier": "CUSTOM", "masterType": "tiny",
        "hyperparameters": spec}}
    assert backend.server.api("POST", JOBS, json=body).status_code == 200
    job = backend.server.wait_state("tuned", ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=180)
    assert job["state"] == "SUCCEEDED", job
    assert job["trainingOutput"]["completedTrialCount"] == "2"
    assert len(list((tmp_path / "rec").glob("*.json"))) == 2
    if backend.ray:
        wait_ray_free(backend)
