"""Helpers for end-to-end tests: a real server process and real trainer packages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
MLE = [sys.executable, "-m", "mlengine.cli.main"]


class ServerProcess:
    """A real control plane on 127.0.0.1 with its own MLE_HOME."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("MLE_")}
        self.env.update({"MLE_HOME": str(home), "MLE_CANCEL_GRACE_SECONDS": "3"})
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""

    def start(self, timeout: float = 60) -> ServerProcess:
        server_file = self.home / "server.json"
        server_file.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "server-test.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlengine.api.server", "--host", "127.0.0.1", "--port", "0"],
            env=self.env, stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server died:\n" + (self.home / "server-test.log").read_text()[-3000:])
            if server_file.exists():
                info = json.loads(server_file.read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    self.token = (self.home / "admin_token").read_text().strip()
                    self.env["MLE_API_URL"] = self.url
                    return self
            time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"},
                            timeout=30)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client as c:
            return c.request(method, path, **kwargs)

    def job(self, job_id: str, project: str = "mlengine") -> dict[str, Any]:
        response = self.api("GET", f"/v1/projects/{project}/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout}s: {job}")

    def logs(self, job_id: str, task_name: str | None = None) -> list[dict[str, Any]]:
        params = {"taskName": task_name} if task_name else {}
        response = self.api("GET", f"/v1/projects/mlengine/jobs/{job_id}/logs", params=params)
        response.raise_for_status()
        return response.json()["entries"]

    def mle(self, *args: str, check: bool = False, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*MLE, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"mle {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


def short_home() -> Path:
    # Unix socket paths (Ray, PostgreSQL) are limited to 108 characters: keep homes short.
    return Path(tempfile.mkdtemp(prefix="mle-"))


def _kill_leftovers(home: Path) -> None:
    """Tests must leave nothing running: kill replica groups whose files live under home."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline and "mlengine.jobs.executors.supervisor" in cmdline:
            with contextlib.suppress(OSError):
                os.killpg(int(proc.name), signal.SIGKILL)


TRAINER_SETUP = """
from setuptools import find_packages, setup
setup(name="{name}", version="0.1", packages=find_packages(), install_requires={requires!r})
"""


def write_trainer(root: Path, task_code: str, name: str = "trainer", requires: list[str] | None = None,
                  setup_py: bool = True) -> Path:
    """A trainer package at root/<name>/ (with root/setup.py); returns the package dir."""
    pkg = root / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "task.py").write_text(textwrap.dedent(task_code))
    if setup_py:
        (root / "setup.py").write_text(TRAINER_SETUP.format(name=f"{name}-pkg", requires=requires or []))
    return pkg


def build_package(root: Path, name: str = "trainer") -> Path:
    from mlengine.core.packaging import build_sdist

    return build_sdist(root / name, root / "dist")


#: A trainer that records what it saw, prints, and honours --sleep and --exit-code.
ECHO_TRAINER = """
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
parser.add_argument("--sleep", type=float, default=0)
parser.add_argument("--exit-code", type=int, default=0)
parser.add_argument("--out")
args, unknown = parser.parse_known_args()
record = {
    "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(),
    "env": {k: os.environ.get(k) for k in ("TF_CONFIG", "CLUSTER_SPEC", "CLOUD_ML_JOB_ID",
            "CLOUD_ML_HP_METRIC_FILE", "PYTHONUNBUFFERED")},
}
if args.out:
    with open(args.out, "w") as f:
        json.dump(record, f)
print("hello from the trainer", flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
time.sleep(args.sleep)
if args.exit_code:
    print("trainer failing on purpose", file=sys.stderr, flush=True)
sys.exit(args.exit_code)
"""


def job_body(job_id: str, package: Path, args: list[str] | None = None, **training: Any) -> dict[str, Any]:
    training_input = {"packageUris": [str(package)], "pythonModule": "trainer.task",
                      "region": "local", "args": args or []}
    training_input.update(training)
    return {"jobId": job_id, "trainingInput": training_input}
