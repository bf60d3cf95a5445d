"""Starting, probing and measuring the servers that bench/serving.py compares.

Every server runs in its own session (process group) on 127.0.0.1 and is stopped by group;
"start" is the time from launching its process to its first successful prediction.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "bench" / ".envs"
PEERS = ROOT / "bench" / "peers"
sys.path.insert(0, str(ROOT))

from tests.e2e.helpers import ServerProcess, short_home  # noqa: E402
from tests.e2e.serving_helpers import kill_serving, serving_processes, wait_operation  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_of(pids: list[int]) -> tuple[float, float]:
    """(PSS, RSS) in MiB summed over ``pids``."""
    pss = rss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
    return pss / 1024, rss / 1024


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


@dataclass
class Server:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    start_seconds: float = 0.0
    memory: Callable[[], dict[str, tuple[float, float]]] = dict
    stop: Callable[[], None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)


def wait_first_prediction(url: str, body: dict[str, Any], headers: dict[str, str], started: float,
                          alive: Callable[[], bool], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for {url} died while starting")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(url, json=body, headers=headers, timeout=60)
            if response.status_code == 200:
                return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"{url} gave no prediction within {timeout}s")


def _popen(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})}, cwd=ROOT)


def _stopper(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    return stop


def start_process_server(name: str, argv: list[str], probe: dict[str, Any], work: Path,
                         env: dict[str, str] | None = None, path: str = "/predict") -> Server:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    started = time.monotonic()
    proc = _popen(argv, work / f"{name}.log", env)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        seconds = wait_first_prediction(url, probe, {}, started, lambda: proc.poll() is None)
    except Exception:
        _stopper(proc)()
        raise
    return Server(name, url, start_seconds=seconds, stop=_stopper(proc),
                  memory=lambda: {"all processes": memory_of(process_tree(proc.pid))})


def start_floor(kind: str, model: Path, probe: dict[str, Any], work: Path) -> Server:
    name = "HTTP floor" if kind == "http" else "per-request floor"
    argv = [sys.executable, str(PEERS / "floor.py"), "--kind", kind, "--model", str(model), "--port", "{port}"]
    return start_process_server(name, argv, probe, work)


def start_mlflow(kind: str, model: Path, probe: dict[str, Any], work: Path) -> Server:
    python = ENVS / "mlflow" / "bin" / "python"
    out = work / f"mlflow-{kind}"
    subprocess.run([str(python), str(PEERS / "mlflow_prepare.py"), "--kind", kind, "--model", str(model),
                    "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    argv = [str(ENVS / "mlflow" / "bin" / "mlflow"), "models", "serve", "-m", str(out), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", "{port}"]
    env = {"PATH": f"{ENVS / 'mlflow' / 'bin'}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": str(work / "mlruns")}
    return start_process_server("mlflow models serve", argv, probe, work, env, path="/invocations")


def start_ray(kind: str, model: Path, probe: dict[str, Any], work: Path) -> Server:
    python = ENVS / "ray" / "bin" / "python"
    argv = [str(python), str(PEERS / "ray_app.py"), "--kind", kind, "--model", str(model), "--port", "{port}"]
    return start_process_server("Ray Serve", argv, probe, work, {"RAY_USAGE_STATS_ENABLED": "0"})


def start_mlengine(kind: str, model: Path, probe: dict[str, Any], work: Path, idle_seconds: float) -> Server:
    """An mlengine server with version v1 (one replica, kept) and, for the cold start, version
    cold (minNodes 0, scaled to zero after ``idle_seconds``)."""
    env = {"MLE_SERVING_IDLE_SECONDS": str(idle_seconds), "MLE_LOG_LEVEL": "warning"}
    server = ServerProcess(short_home(), env)
    server.start()
    try:
        assert server.api("POST", "/v1/projects/bench/models", json={"name": "m"}).status_code == 200
        started = time.monotonic()
        for version, scaling in (("v1", {"minNodes": 1, "maxNodes": 1}), ("cold", {"minNodes": 0, "maxNodes": 1})):
            response = server.api("POST", "/v1/projects/bench/models/m/versions",
                                  json={"name": version, "deploymentUri": str(model), "autoScaling": scaling})
            operation = wait_operation(server, response.json(), timeout=300)
            if operation.get("error"):
                raise RuntimeError(f"mlengine could not deploy {model}: {operation['error']}")
            if version == "v1":
                deployed = time.monotonic() - started
    except Exception:
        server.stop()
        kill_serving(server.home)
        raise
    headers = {"Authorization": f"Bearer {server.token}"}

    def memory() -> dict[str, tuple[float, float]]:
        zygotes, replicas = serving_processes(server)
        return {"server": memory_of([server.proc.pid]) if server.proc else (0.0, 0.0),
                "zygote": memory_of(zygotes), "replica (each)": memory_of(replicas[:1]),
                "replicas": (float(len(replicas)), 0.0)}

    def stop() -> None:
        server.stop()
        kill_serving(server.home)

    return Server("mlengine", f"{server.url}/v1/projects/bench/models/m/versions/v1:predict", headers,
                  start_seconds=deployed, memory=memory, stop=stop,
                  extra={"server": server,
                         "cold_url": f"{server.url}/v1/projects/bench/models/m/versions/cold:predict"})


def cold_starts(server: Server, probe: dict[str, Any], trials: int = 3, timeout: float = 120) -> list[float]:
    """Scale-from-zero times of mlengine's ``cold`` version: wait until it has no replica, then
    time the first prediction."""
    mle: ServerProcess = server.extra["server"]
    times = []
    for _ in range(trials):
        deadline = time.monotonic() + timeout
        while True:
            version = mle.api("GET", "/v1/projects/bench/models/m/versions/cold").json()
            if (version.get("replicas") or {}).get("ready", 0) == 0 and not (version.get("replicas") or {}).get(
                    "starting"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the cold version did not scale to zero")
            time.sleep(0.2)
        started = time.monotonic()
        response = httpx.post(server.extra["cold_url"], json=probe, headers=server.headers, timeout=120)
        elapsed = time.monotonic() - started
        if response.status_code != 200:
            raise RuntimeError(f"cold prediction failed: {response.status_code} {response.text}")
        times.append(elapsed)
    return times


def run_wrk(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float,
            work: Path) -> dict[str, float]:
    """Closed-loop load with wrk (one thread): requests/s, p50 and p99 in ms, errors."""
    body_file = work / "body.json"
    body_file.write_bytes(body)
    script = work / "post.lua"
    lines = ['wrk.method = "POST"', f'wrk.body = io.open("{body_file}", "rb"):read("*a")',
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += ["errors = 0",
              "response = function(status, headers, body) if status ~= 200 then errors = errors + 1 end end",
              'done = function(summary, latency, requests) io.write(string.format("JSON %d %d %f %f\\n", '
              "summary.requests, errors, latency:percentile(50), latency:percentile(99))) end"]
    script.write_text("\n".join(lines) + "\n")
    duration = f"-d{max(1, round(seconds))}s"
    argv = ["wrk", "-t1", f"-c{connections}", duration, "--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec:"))
    _, requests, errors, p50, p99 = next(line for line in out.splitlines() if line.startswith("JSON")).split()
    socket_errors = sum(int(x) for x in __import__("re").findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rate, "p50": float(p50) / 1000, "p99": float(p99) / 1000,
            "errors": int(errors) + socket_errors, "requests": int(requests)}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
