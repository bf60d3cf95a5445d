"""Issue 15.3: serving on Ray. One real two-node Ray cluster on this machine (nodes at
127.0.0.2 and 127.0.0.3, 2 CPUs each) for the module:

- the ``ray`` replica backend passes the replica backend conformance suite (driven from this
  process);
- a real server with ``MLE_SERVING_BACKEND=ray`` serves a version of 2 replicas from actors on
  both nodes, the replicas see neither Ray's nor the server's environment, and killing one
  actor under load costs a bounded burst of 503s before a replacement serves.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, build_package, short_home
from tests.e2e.serving_helpers import MODELS, deploy
from tests.raycluster import TestRay

from mlengine.config import load_settings
from mlengine.prediction.backends import ReplicaBackend
from mlengine.prediction.backends.ray import NAMESPACE, RayBackend
from mlengine.testing.replica_backends import ReplicaBackendSuite

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SECRET = {"MLE_TEST_SECRET": "ray-serving-canary"}
ROUTINE = '''
import os


class Where:
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        leaked = sorted(k for k in os.environ if k.startswith(("RAY_", "MLE_")))
        return [{"pid": os.getpid(), "leaked": leaked, "x": x} for x in instances]
'''


@pytest.fixture(scope="module")
def cluster() -> Iterator[TestRay]:
    from tests.raycluster import start_cluster, use_in_this_process

    # A loaded 2-core machine can take longer than Ray's default to start a node's agents.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray_cluster = start_cluster([(2, None), (2, None)])
    try:
        use_in_this_process(ray_cluster)
        import ray

        ray.init(address=ray_cluster.address, log_to_driver=False)
        yield ray_cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        ray_cluster.stop()


def replica_processes(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and "mlengine.prediction.replica" in cmdline and state not in ("Z", "X"):
            found.append(f"{entry.name}: {cmdline.strip()[:200]}")
    return found


class TestRayBackend(ReplicaBackendSuite):
    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: TestRay) -> None:
        self.address = cluster.address

    def make_backend(self, home: Path) -> ReplicaBackend:
        return RayBackend(load_settings(home=home, ray_address=self.address))

    def leftovers(self, backend: ReplicaBackend) -> list[str]:
        assert isinstance(backend, RayBackend)
        return [*backend.leftovers(), *replica_processes(f"ray-{backend.tag}-")]


# A real server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(cluster: TestRay) -> Iterator[ServerProcess]:
    env = {**cluster.env, "MLE_EXECUTOR": "local", "MLE_SERVING_BACKEND": "ray", "MLE_SERVING_IDLE_SECONDS": "3",
           **SECRET}
    process = ServerProcess(short_home(), env).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def version(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("rayserve")
    (root / "whereami").mkdir()
    (root / "whereami" / "__init__.py").write_text(textwrap.dedent(ROUTINE))
    package = build_package(root, "whereami")
    model = root / "model"
    model.mkdir()
    (model / "note.txt").write_text("no weights: the routine answers where it runs")
    operation = deploy(server, "where", "v1", model, predictionClass="whereami.Where", packageUris=[str(package)],
                       manualScaling={"nodes": 2}, machineType="mls1-c1-m2")
    assert "error" not in operation, operation
    deadline = time.monotonic() + 120  # READY with its first replica; the second follows
    while server.api("GET", f"{MODELS}/where/versions/v1").json()["replicas"]["ready"] < 2:
        assert time.monotonic() < deadline, "the second replica did not start"
        time.sleep(0.5)
    return "v1"


def hosts_by_pid() -> dict[int, str]:
    """Replica pid → node address, asked of every serving actor of the cluster."""
    import ray

    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != NAMESPACE:
            continue
        try:
            where = ray.get(ray.get_actor(entry["name"], namespace=NAMESPACE).where.remote(), timeout=30)
        except Exception:  # killed meanwhile
            continue
        if where:
            out[int(where["pid"])] = where["host"]
    return out


def fire(server: ServerProcess, count: int, threads: int) -> list[tuple[int, dict[str, Any]]]:
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with server.client as client:
            for i in range(n):
                response = client.post(f"{MODELS}/where:predict", json={"instances": [i]})
                with lock:
                    answers.append((response.status_code, response.json()))

    pool = [threading.Thread(target=worker, args=(count // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return answers


def test_version_serves_from_actors_on_both_nodes(server: ServerProcess, version: str) -> None:
    answers = fire(server, 160, 8)
    assert {status for status, _ in answers} == {200}, answers[:3]
    pids = Counter(body["predictions"][0]["pid"] for _, body in answers)
    hosts = hosts_by_pid()
    assert set(pids) <= set(hosts), (pids, hosts)
    assert {hosts[pid] for pid in pids} == {"127.0.0.2", "127.0.0.3"}, (pids, hosts)
    assert all(body["predictions"][0]["leaked"] == [] for _, body in answers)  # no RAY_*, no MLE_*
    described = server.api("GET", f"{MODELS}/where/versions/{version}").json()
    assert described["replicas"] == {"ready": 2, "starting": 0}


def test_killed_actor_gives_a_bounded_burst_and_a_replacement(server: ServerProcess, version: str) -> None:
    import ray

    before = hosts_by_pid()
    assert len(before) == 2
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with server.client as client:
            while not stop.is_set():
                response = client.post(f"{MODELS}/where:predict", json={"instances": [1]})
                results.append((time.monotonic(), response.status_code))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.5)
        victim = next(e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                      if e["namespace"] == NAMESPACE)
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace=NAMESPACE), no_restart=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = hosts_by_pid()
            described = server.api("GET", f"{MODELS}/where/versions/{version}").json()
            if len(now) == 2 and set(now) != set(before) and described["replicas"]["ready"] == 2:
                replaced_at = time.monotonic()
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no replacement: {hosts_by_pid()}")
        time.sleep(2.0)
    finally:
        stop.set()
        for w in workers:
            w.join()
    errors = [status for t, status in results if status != 200]
    assert set(errors) <= {503}, Counter(errors)
    assert len(errors) <= 8, f"{len(errors)} errors of {len(results)}: the burst must be bounded"
    assert all(t < killed_at + 5 for t, status in results if status != 200), "errors after the burst"
    late = [status for t, status in results if t > replaced_at]
    assert late and all(status == 200 for status in late)


def test_scale_to_zero_and_back_on_ray(server: ServerProcess, version: str) -> None:
    described = server.api("GET", f"{MODELS}/where/versions/{version}").json()
    operation = deploy(server, "where", "zero", described["deploymentUri"], predictionClass="whereami.Where",
                       packageUris=described["packageUris"], autoScaling={"minNodes": 0, "maxNodes": 1})
    assert "error" not in operation, operation
    path = f"{MODELS}/where/versions/zero"
    deadline = time.monotonic() + 60
    while server.api("GET", path).json()["replicas"]["ready"] != 0:  # idle 3 s: scaled to zero
        assert time.monotonic() < deadline, "the version did not scale to zero"
        time.sleep(0.5)
    while len(hosts_by_pid()) != 2:  # its actor goes too: only the manual version's are left
        assert time.monotonic() < deadline + 30, f"the idle replica's actor is still there: {hosts_by_pid()}"
        time.sleep(0.5)
    response = server.api("POST", f"{path}:predict", json={"instances": [7]})  # a cold start on Ray
    assert response.status_code == 200 and response.json()["predictions"][0]["x"] == 7
    assert len(hosts_by_pid()) == 3


# The replica's TCP side, without Ray ----------------------------------------------------------
def test_tcp_replica_answers_only_who_knows_the_version_secret(tmp_path: Path) -> None:
    """A replica started the way the Ray agent starts it (an inherited TCP listener, the secret
    through a pipe) closes a connection that cannot answer its nonce, before any frame."""
    import asyncio
    import os
    import socket
    import subprocess
    import sys

    from mlengine.prediction import protocol
    from mlengine.prediction.backends.ray import ActorProcess, RayReplica
    from mlengine.testing.replica_backends import Owner, body

    template = ReplicaBackendSuite().template(tmp_path)
    config = tmp_path / "replica.json"
    config.write_text(json.dumps(template.config.to_json()))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    os.write(write_end, b"s" * 32)
    os.close(write_end)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": template.config.pythonpath[0], "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mlengine.prediction.replica", "--config", str(config),
                             "--listen-fd", str(listener.fileno()), "--secret-fd", str(read_end)],
                            pass_fds=(listener.fileno(), read_end), env=env, start_new_session=True)
    listener.close()
    os.close(read_end)

    async def scenario() -> None:
        # A stranger: gets the nonce, answers wrong, is closed without a greeting.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        nonce = await reader.readexactly(protocol.NONCE_SIZE)
        writer.write(protocol.answer(b"wrong" * 7, nonce))
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # The router with the secret: READY, then predictions.
        owner = Owner()
        replica = RayReplica(owner, ActorProcess(None, {"pid": proc.pid, "host": "127.0.0.1", "port": port},
                                                 str(tmp_path / "log")), b"s" * 32)
        await asyncio.get_running_loop().create_connection(lambda: replica, "127.0.0.1", port)
        kind, _ = await asyncio.wait_for(replica.greeting, 60)
        assert kind == protocol.READY
        status, payload, _ = await replica.send(body("a"), time.monotonic() + 30)
        assert status == 200 and json.loads(payload)["predictions"][0]["echo"] == "a"
        replica.transport.close()
        await asyncio.sleep(0.2)

    try:
        asyncio.run(scenario())
        assert proc.wait(10) == 0  # its last router connection closed: it exits
    finally:
        if proc.poll() is None:
            proc.kill()
