"""The executor conformance suite (:mod:`mlengine.testing.executors`) on every backend: local
processes and a real two-node Ray cluster on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.raycluster import TestRay, start_cluster, use_in_this_process

from mlengine.config import load_settings
from mlengine.testing.executors import ExecutorConformance, MakeExecutor, launch, place, wait_finished

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[TestRay]:
    cluster = start_cluster([(2, {"node_a": 1}), (2, {"node_b": 1})])
    use_in_this_process(cluster)
    try:
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


class TestLocalExecutor(ExecutorConformance):
    @pytest.fixture
    def make_executor(self, tmp_path: Path) -> MakeExecutor:
        from mlengine.jobs.executors.local import LocalExecutor

        settings = load_settings(home=tmp_path / "home", executor="local")
        return lambda: LocalExecutor(settings)


class TestRayExecutor(ExecutorConformance):
    @pytest.fixture
    def make_executor(self, tmp_path: Path, ray_cluster: TestRay) -> MakeExecutor:
        from mlengine.jobs.executors.ray import RayExecutor

        settings = load_settings(home=tmp_path / "home", executor="ray", ray_address=ray_cluster.address)
        return lambda: RayExecutor(settings)

    # Only Ray holds resources between jobs (placement groups); the local executor has nothing
    # to release, so this case is Ray's alone.
    def test_release_frees_everything_and_kills_replicas(self, make_executor: MakeExecutor, tmp_path: Path) -> None:
        import ray

        executor: Any = make_executor()
        placement = place(executor, 4, key="p/rel")
        nodes = set(placement.reservation["nodes"].values())
        assert len(nodes) == 2, "4 replicas of 1 CPU on two 2-CPU nodes must use both nodes"
        assert ray.available_resources().get("CPU", 0) < 0.5
        handles = [launch(executor, placement, tmp_path, i, "import time; time.sleep(300)") for i in range(4)]
        executor.release(placement.reservation)
        for handle in handles:
            status = wait_finished(executor, handle, timeout=60)
            assert status.finished
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 4
