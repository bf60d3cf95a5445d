"""Machine types, accelerators, and whether a job fits an executor now, later or never."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlengine.errors import MLEngineError
from mlengine.jobs import capacity
from mlengine.jobs.capacity import Capacity, held, held_by
from mlengine.jobs.ports import parse_range, reserve_ports
from mlengine.training.kind import replica_requests
from mlengine.training.machines import BUILTIN, Resources, machine_table


def replica_demands(training_input: dict[str, Any], mode: str, table: Any) -> list[tuple[str, Resources]]:
    return [(r.task_name, held(r.resources, mode)) for r in replica_requests(training_input, table)]


def assess(training_input: dict[str, Any], mode: str, cap: Capacity) -> capacity.Assessment:
    return capacity.assess(replica_requests(training_input, machine_table()), mode, cap)


def ti(**fields: Any) -> dict[str, Any]:
    return {"packageUris": ["p.tar.gz"], "pythonModule": "trainer.task", **fields}


def laptop(cpus: float = 2, gpus: int = 0) -> Capacity:
    total = Resources(cpus, 24, gpus)
    return Capacity(total, [total], "the local executor")


def test_builtin_types() -> None:
    assert BUILTIN["standard"].resources == Resources(4, 15, 0)
    assert BUILTIN["n1-highmem-8"].resources == Resources(8, 52, 0)
    assert BUILTIN["standard_p100"].gpus == 1 and BUILTIN["standard_p100"].gpu_type == "NVIDIA_TESLA_P100"
    assert BUILTIN["e2-standard-4"].resources == Resources(4, 16, 0)
    assert BUILTIN["a2-highgpu-2g"].gpus == 2


@pytest.mark.parametrize(("tier", "counts"), [
    ("BASIC", {"master-replica-0": 1}),
    ("STANDARD_1", {"master-replica-0": 1, "worker-replica-3": 1, "ps-replica-2": 1}),
    ("PREMIUM_1", {"worker-replica-18": 1, "ps-replica-10": 1}),
    ("BASIC_GPU", {"master-replica-0": 1}),
])
def test_scale_tiers(tier: str, counts: dict[str, int]) -> None:
    replicas = dict(replica_demands(ti(scaleTier=tier), "machine", machine_table()))
    assert set(counts) <= set(replicas)
    if tier == "STANDARD_1":
        assert len(replicas) == 8 and replicas["ps-replica-0"] == Resources(4, 15, 0)
    if tier == "PREMIUM_1":
        assert len(replicas) == 31
    if tier == "BASIC_GPU":
        assert replicas["master-replica-0"].gpus == 1


def test_custom_with_accelerators_and_evaluator() -> None:
    body = ti(scaleTier="CUSTOM", masterType="n1-standard-8",
              masterConfig={"acceleratorConfig": {"count": 2, "type": "NVIDIA_TESLA_T4"}},
              workerType="n1-highcpu-16", workerCount="2", evaluatorType="n1-standard-4", evaluatorCount="1")
    replicas = dict(replica_demands(body, "machine", machine_table()))
    assert replicas["master-replica-0"] == Resources(8, 30, 2)
    assert replicas["worker-replica-1"] == Resources(16, 14.4, 0)
    assert replicas["evaluator-replica-0"] == Resources(4, 15, 0)
    # process mode: at most one CPU each, no memory, GPUs exact
    process = dict(replica_demands(body, "process", machine_table()))
    assert process["master-replica-0"] == Resources(1, 0, 2)


@pytest.mark.parametrize(("fields", "field_named"), [
    ({"masterType": "n1-standard-3"}, "trainingInput.masterType"),
    ({"masterType": "cloud_tpu"}, "trainingInput.masterType"),
    ({"masterType": "standard", "workerType": "huge", "workerCount": "1"}, "trainingInput.workerType"),
    ({"masterType": "standard", "masterConfig": {"acceleratorConfig": {"count": 1, "type": "TPU_V3"}}},
     "trainingInput.masterConfig.acceleratorConfig.type"),
    ({"masterType": "standard", "masterConfig": {"acceleratorConfig": {"count": 0, "type": "NVIDIA_TESLA_T4"}}},
     "trainingInput.masterConfig.acceleratorConfig.count"),
    ({"masterType": "standard_gpu", "masterConfig": {"acceleratorConfig": {"count": 1, "type": "NVIDIA_TESLA_T4"}}},
     "trainingInput.masterConfig.acceleratorConfig"),
])
def test_bad_requests_name_the_field(fields: dict[str, Any], field_named: str) -> None:
    with pytest.raises(MLEngineError) as err:
        replica_demands(ti(scaleTier="CUSTOM", **fields), "machine", machine_table())
    assert f"Field: {field_named} Error:" in err.value.message


def test_user_machine_types(tmp_path: Path) -> None:
    path = tmp_path / "types.yaml"
    path.write_text("tiny: {cpus: 0.5, memoryGb: 1}\nstandard: {cpus: 1, memoryGb: 2, gpus: 1}\n")
    table = machine_table(path)
    assert table["tiny"].resources == Resources(0.5, 1, 0)
    assert table["standard"].resources == Resources(1, 2, 1)  # replaces the built-in
    path.write_text("bad: {cpus: -1}\n")
    with pytest.raises(MLEngineError, match="bad.cpus"):
        machine_table(path)
    assert machine_table(tmp_path / "missing.yaml") == BUILTIN


def test_fits_now_later_never() -> None:
    distributed = ti(scaleTier="CUSTOM", masterType="standard", workerType="standard", workerCount="2",
                     parameterServerType="standard", parameterServerCount="1", useChiefInTfConfig=True)
    # process mode on a 2-core laptop: 4 replicas hold 4 CPUs -> never, unless capacity is raised
    verdict = assess(distributed, "process", laptop(2))
    assert verdict.never and "4 CPUs (has 2)" in verdict.never
    verdict = assess(distributed, "process", laptop(4))
    assert verdict.never is None and verdict.demand == Resources(4, 0, 0)
    assert verdict.fits_with(Resources(), laptop(4))
    assert not verdict.fits_with(Resources(1, 0, 0), laptop(4))  # waits in QUEUED
    # machine mode: a replica bigger than every node can never be placed
    nodes = Capacity(Resources(16, 64, 0), [Resources(8, 32, 0), Resources(8, 32, 0)], "Ray")
    big = ti(scaleTier="CUSTOM", masterType="n1-standard-16")
    verdict = assess(big, "machine", nodes)
    assert verdict.never and "master-replica-0" in verdict.never and "single node" in verdict.never
    gpu = ti(scaleTier="BASIC_GPU")
    verdict = assess(gpu, "process", laptop(2))
    assert verdict.never and "1 GPUs (has 0)" in verdict.never


def test_held_by_reads_the_scheduling_record() -> None:
    assert held_by({}) == Resources(0, 0, 0)
    assert held_by({"demand": {"cpus": 1.5, "memoryGb": 2, "gpus": 1}}) == Resources(1.5, 2, 1)


def test_ports_are_distinct_and_held() -> None:
    import socket

    first, second = reserve_ports(3), reserve_ports(3)
    try:
        assert len(set(first.ports) | set(second.ports)) == 6
        with socket.socket() as s, pytest.raises(OSError):
            s.bind(("127.0.0.1", first.ports[0]))  # held until released
        first.release(first.ports[0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", first.ports[0]))
    finally:
        first.release()
        second.release()
    assert parse_range("30000-30010") == (30000, 30010)
    with pytest.raises(MLEngineError, match="MLE_PORT_RANGE"):
        parse_range("10-5")
