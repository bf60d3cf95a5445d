"""Starting, joining and stopping Ray nodes on this machine, locked down.

Contract
--------
- :func:`start_node` runs ``ray start --block`` as the leader of a new session, so that the
  node (GCS, raylet, workers, agents) can be stopped precisely by :func:`stop_node` (every
  process of that session) and never by ``ray stop``, which would stop every Ray of the user.
- A node started here listens on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes
  Ray resolve its node address to the loopback address instead of the network one), runs
  without the dashboard and its job API (``--include-dashboard=false``), and requires Ray's
  token authentication (``RAY_AUTH_MODE=token`` with the token in a 0600 file): nothing on
  the network, and nothing unauthenticated on the machine.
- :func:`ensure_local_ray` is what ``mle server start --executor ray`` without
  ``--ray-address`` does: join the Ray that mlengine started before under ``MLE_HOME/ray``
  (recorded in ``cluster.json``) if it still runs, else start one. That Ray outlives the
  control plane (jobs survive a restart); ``mle server stop --with-ray`` stops it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlengine.core import processes
from mlengine.errors import Code, MLEngineError

START_TIMEOUT = 90.0


@dataclass(frozen=True)
class RayNode:
    """A Ray node started by :func:`start_node`: ``pid`` leads its session."""

    pid: int
    address: str
    temp_dir: str
    log_file: str
    token_file: str


def security_env(token_file: Path | str, loopback: bool = True) -> dict[str, str]:
    """Environment for every process that starts or talks to a locked-down local Ray.

    ``loopback``: Ray's single-machine mode, in which every Ray server binds 127.0.0.1 (Ray
    refuses to add nodes to it). Without it (a node with its own address, as a second node on
    this machine at 127.0.0.2 or a real cluster) Ray's gRPC servers listen on all interfaces,
    still behind the token."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0" if loopback else "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def ensure_token(path: Path) -> Path:
    """A random Ray auth token in a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_command() -> list[str]:
    script = Path(sys.executable).with_name("ray")
    if script.exists():
        return [str(script)]
    found = shutil.which("ray")
    if found:
        return [found]
    raise MLEngineError(Code.FAILED_PRECONDITION,
                        "Ray is not installed: pip install 'mlengine[ray]' (on every node of the cluster)")


def short_temp_dir(key: str) -> Path:
    """Ray puts unix sockets under its temp dir (108-byte limit): keep it short."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"mle-ray-{digest}"


def start_node(
    *, token_file: Path, temp_dir: Path, log_file: Path, head: bool = True, address: str | None = None,
    num_cpus: float | None = None, num_gpus: int | None = None, resources: dict[str, float] | None = None,
    object_store_mb: int = 256, timeout: float = START_TIMEOUT, node_ip: str = "127.0.0.1",
    dashboard_port: int | None = None,
) -> RayNode:
    """Start a Ray head (or a node joining ``address``) and wait until it runs.

    A head on 127.0.0.1 runs in Ray's loopback-only mode; a node with another ``node_ip``
    (e.g. 127.0.0.2, a second node on this machine) is a cluster node. ``dashboard_port``
    (benchmarks only) starts the dashboard and its job API on 127.0.0.1, behind the token."""
    if not head and not address:
        raise ValueError("a non-head node needs the head's address")
    loopback = head and node_ip == "127.0.0.1"
    argv = [*ray_command(), "start", "--block", "--disable-usage-stats",
            "--node-ip-address", node_ip, "--temp-dir", str(temp_dir),
            "--object-store-memory", str(object_store_mb * 1024 * 1024)]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        argv += ["--num-gpus", str(num_gpus)]
    if resources:
        argv += ["--resources", json.dumps(resources)]
    if head:
        port = _free_port()
        address = f"{node_ip}:{port}"  # Ray rewrites 127.0.0.1 to the network address
        dashboard = ["--include-dashboard=true", "--dashboard-port", str(dashboard_port)] if dashboard_port \
            else ["--include-dashboard=false"]
        argv += ["--head", "--port", str(port), *dashboard, "--dashboard-host", "127.0.0.1",
                 "--ray-client-server-port", str(_free_port())]
    else:
        argv += ["--address", str(address)]
    temp_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **security_env(token_file, loopback)}
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, close_fds=True)
    node = RayNode(proc.pid, str(address), str(temp_dir), str(log_file), str(token_file))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_node(node)  # whatever it started before failing
            raise MLEngineError(Code.FAILED_PRECONDITION,
                                f"`ray start` exited with {proc.returncode}; see {log_file}:\n{_tail(log_file)}")
        if "Ray runtime started" in _tail(log_file, 200):
            return node
        time.sleep(0.2)
    stop_node(node)
    raise MLEngineError(Code.DEADLINE_EXCEEDED, f"Ray did not start within {timeout:.0f} s; see {log_file}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def session_members(sid: int) -> list[int]:
    """Pids of every process in session ``sid`` (what ``ray start --block`` started)."""
    return processes.session_members(sid, None)


def stop_node(node: RayNode | dict[str, Any], grace: float = 8.0) -> None:
    """Stop one node started by :func:`start_node`: SIGTERM to its session, SIGKILL after ``grace``."""
    pid = int(node.pid if isinstance(node, RayNode) else node["pid"])
    members = session_members(pid)
    for p in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and session_members(pid):
        _reap(pid)
        time.sleep(0.2)
    for p in session_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not session_members(pid):
            break
        time.sleep(0.1)


def _reap(pid: int) -> None:
    """Collect ``ray start`` if it is our own child (a zombie still counts as a member)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(record: dict[str, Any]) -> bool:
    try:
        host, port = str(record["address"]).rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2):
            pass
    except (OSError, KeyError, ValueError):
        return False
    return bool(session_members(int(record["pid"])))


def ensure_local_ray(ray_dir: Path, num_cpus: int = 0) -> tuple[str, Path]:
    """(address, token file) of the local Ray mlengine runs under ``ray_dir``, started if needed."""
    token = ensure_token(ray_dir / "token")
    record_file = ray_dir / "cluster.json"
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(record_file.read_text())
        if is_running(record):
            return str(record["address"]), token
    node = start_node(token_file=token, temp_dir=short_temp_dir(str(ray_dir)), log_file=ray_dir / "ray.log",
                      num_cpus=num_cpus or (os.cpu_count() or 1))
    record_file.write_text(json.dumps(asdict(node)))
    return node.address, token


def stop_local_ray(ray_dir: Path) -> bool:
    """Stop the local Ray recorded under ``ray_dir``; False if none was running."""
    record_file = ray_dir / "cluster.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return False
    running = bool(session_members(int(record["pid"])))
    if running:
        stop_node(record)
    record_file.unlink(missing_ok=True)
    return running
