"""`mle server start --executor ray` without an address: the server starts its own Ray,
locked down (127.0.0.1 only, token auth, no dashboard or job API), runs a job on it, and
`mle server stop --with-ray` stops that Ray and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.e2e.helpers import MLE, _kill_leftovers, short_home

from mlengine.jobs.executors.ray_cluster import session_members, stop_node

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def listening_addresses(pids: list[int]) -> set[str]:
    """host:port of every TCP socket in LISTEN state owned by ``pids`` (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            if width == 8:
                host = ".".join(str(b) for b in reversed(raw))
            else:
                words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
                joined = b"".join(words)
                host = "::ffff:" + ".".join(str(b) for b in joined[12:]) if joined[:12] == \
                    b"\0" * 10 + b"\xff\xff" else joined.hex()
            found.add(f"{host}:{int(port_hex, 16)}")
    return found


def test_server_starts_a_locked_down_local_ray(echo_package: Path) -> None:
    home = short_home()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLE_", "RAY_"))}
    env.update(MLE_HOME=str(home), MLE_RAY_NUM_CPUS="2")

    def mle(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MLE, *args], env=env, capture_output=True, text=True, timeout=240)

    record: dict[str, object] = {}
    try:
        started = mle("server", "start", "--executor", "ray", "--port", "0")
        assert started.returncode == 0, started.stdout + started.stderr
        record = json.loads((home / "ray" / "cluster.json").read_text())
        assert oct((home / "ray" / "token").stat().st_mode & 0o777) == "0o600"
        members = session_members(int(str(record["pid"])))
        assert members, "the local Ray runs in its own session"
        listening = listening_addresses(members)
        assert listening, "Ray listens somewhere"
        exposed = {a for a in listening if not a.startswith(("127.0.0.1:", "::ffff:127.0.0.1:"))}
        assert not exposed, f"Ray listens beyond 127.0.0.1: {exposed}"
        assert not any(a.endswith(":8265") for a in listening), "no dashboard / job API"

        submitted = subprocess.run(
            [*MLE, "jobs", "submit", "training", "on_local_ray", "--packages", str(echo_package),
             "--module-name", "trainer.task", "--stream-logs"],
            env=env, capture_output=True, text=True, timeout=240)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "hello from the trainer" in submitted.stdout + submitted.stderr

        stopped = mle("server", "stop", "--with-ray")
        assert stopped.returncode == 0, stopped.stderr
        assert "Stopped the local Ray cluster" in stopped.stdout + stopped.stderr
        assert not session_members(int(str(record["pid"])))
    finally:
        subprocess.run([*MLE, "server", "stop", "--with-ray"], env=env, capture_output=True, timeout=120)
        if record and session_members(int(str(record["pid"]))):
            stop_node(record)
        _kill_leftovers(home)
