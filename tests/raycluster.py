"""A real Ray cluster for tests: nodes at 127.0.0.2, 127.0.0.3... (loopback addresses, so
each node has its own address like separate machines), token auth, no dashboard.

Each node is ``ray start --block`` in its own session; :meth:`TestRay.stop` stops exactly
those sessions (never ``ray stop``, which would stop every Ray of the user on the machine).
Keep clusters small (2 logical CPUs per node) and start one per test module.

Every cluster of one test process uses the same auth token: Ray reads the token once per
process, so a driver in this process could not talk to a second cluster with another token.
A node that does not come up (Ray gives a node 30 s to register, which a loaded 2-core
machine can miss) is started once more.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mlengine.errors import MLEngineError
from mlengine.jobs.executors.ray_cluster import (
    RayNode,
    ensure_token,
    security_env,
    session_members,
    start_node,
    stop_node,
)


@dataclass
class TestRay:
    root: Path
    token_file: Path
    nodes: list[RayNode] = field(default_factory=list)

    __test__ = False  # not a test class

    @property
    def address(self) -> str:
        return self.nodes[0].address

    @property
    def env(self) -> dict[str, str]:
        """What a server (or this process, before importing ray) needs to use the cluster."""
        return {**security_env(self.token_file, loopback=False), "MLE_RAY_ADDRESS": self.address,
                "MLE_EXECUTOR": "ray"}

    def add_node(self, cpus: float, resources: dict[str, float] | None = None) -> RayNode:
        index = len(self.nodes)
        for attempt in range(2):
            try:
                node = start_node(
                    token_file=self.token_file, temp_dir=self.root / f"n{index}-{attempt}",
                    log_file=self.root / f"n{index}-{attempt}.log", head=not self.nodes,
                    address=self.address if self.nodes else None, num_cpus=cpus, resources=resources,
                    object_store_mb=128, node_ip=f"127.0.0.{index + 2}",
                )
                break
            except MLEngineError:
                if attempt:
                    raise
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            stop_node(node)
        leftovers = [pid for node in self.nodes for pid in session_members(node.pid)]
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if leftovers:
            raise RuntimeError(f"Ray processes left behind: {leftovers}")


@lru_cache(maxsize=1)
def process_token() -> Path:
    """The auth token file every test cluster of this process uses (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="mle-rt-token-"))
    atexit.register(shutil.rmtree, root, True)
    return ensure_token(root / "token")


def start_cluster(node_specs: list[tuple[float, dict[str, float] | None]]) -> TestRay:
    """Start a cluster of ``(cpus, custom resources)`` nodes; the first is the head."""
    root = Path(tempfile.mkdtemp(prefix="mle-rt-"))
    cluster = TestRay(root, process_token())
    try:
        for cpus, resources in node_specs:
            cluster.add_node(cpus, resources)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def use_in_this_process(cluster: TestRay) -> None:
    """Point this process at ``cluster`` (must happen before ``import ray``)."""
    os.environ.update(security_env(cluster.token_file, loopback=False))
