"""Running a trainer package on this machine, as ``gcloud ai-platform local train`` does.

Every replica runs ``python -m MODULE USER_ARGS [--job-dir DIR]`` (the ``python`` on PATH, as
gcloud runs the user's own interpreter; see :func:`user_python`) in the parent directory of
the package, with the environment :func:`mlengine.training.cluster.replica_environment` builds
for a job on the server (``TF_CONFIG``, ``CLUSTER_SPEC``, ``CLOUD_ML_*``, PyTorch rendezvous).

- Single process: the master inherits this terminal (stdin, stdout, stderr), so debuggers
  and progress bars work.
- Distributed: master (or chief), workers, parameter servers and evaluators on consecutive
  ports; each line of their output is prefixed with the task name. The run succeeds when the
  master succeeds (the others are then stopped) and fails as soon as any task fails.
- Ctrl-C (or SIGTERM) stops every task: SIGTERM to its process group, SIGKILL after a grace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlengine.training.cluster import ReplicaSpec, plan_replicas, replica_environment, trainer_argv

JOB_ID = "local"
STOP_GRACE_SECONDS = 5.0


def user_python() -> tuple[str, bool]:
    """The interpreter trainers run with: the ``python`` found on PATH (the user's environment,
    with its frameworks), else this one. Returns ``(path, found_on_path)``."""
    found = shutil.which("python")
    return (found, True) if found else (sys.executable, False)


class TaskFailed(Exception):
    """A task exited non-zero; ``str()`` is the message for the user."""


@dataclass
class Task:
    spec: ReplicaSpec
    proc: subprocess.Popen[bytes]
    reader: threading.Thread | None = None


def plan(
    *, distributed: bool, workers: int, parameter_servers: int, evaluators: int,
    start_port: int, use_chief: bool = False, host: str = "127.0.0.1",
) -> list[ReplicaSpec]:
    """The replicas to start; the first is the master (``chief`` with ``use_chief``)."""
    counts = {"chief" if use_chief else "master": 1}
    if distributed:
        counts.update(worker=workers, ps=parameter_servers, evaluator=evaluators)
    total = sum(counts.values())
    if start_port + total - 1 > 65535:
        raise ValueError(f"--start-port {start_port} leaves no room for {total} ports")
    return plan_replicas(counts, host=host, ports=range(start_port, start_port + total))


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"failed with exit code {code}"


def _pump(stream: IO[bytes], prefix: str, lock: threading.Lock) -> None:
    out = sys.stdout
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        with lock:
            out.write(f"{prefix}{line}\n")
            out.flush()
    stream.close()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to ``mle`` stops the tasks too (handled like Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LocalTrain:
    """One ``mle local train`` run."""

    def __init__(
        self, *, package_path: Path, module: str, user_args: Sequence[str], job_dir: str | None,
        replicas: list[ReplicaSpec], metric_file: Path, distributed: bool, python: str = sys.executable,
    ) -> None:
        self.cwd = package_path.absolute().parent
        self.python = python
        self.module = module
        self.user_args = list(user_args)
        self.job_dir = job_dir
        self.replicas = replicas
        self.metric_file = metric_file
        self.distributed = distributed
        self.tasks: list[Task] = []
        self._lock = threading.Lock()

    def training_input(self) -> dict[str, Any]:
        """What ``TF_CONFIG["job"]`` shows, shaped like a job's trainingInput."""
        counts: dict[str, int] = {}
        for r in self.replicas:
            counts[r.task_type] = counts.get(r.task_type, 0) + 1
        ti: dict[str, Any] = {
            "scaleTier": "CUSTOM" if self.distributed else "BASIC",
            "pythonModule": self.module,
            "args": self.user_args,
        }
        if self.distributed:
            ti.update(masterType="local", workerCount=str(counts.get("worker", 0)),
                      parameterServerCount=str(counts.get("ps", 0)),
                      evaluatorCount=str(counts.get("evaluator", 0)))
            if counts.get("worker"):
                ti["workerType"] = "local"
            if counts.get("ps"):
                ti["parameterServerType"] = "local"
            if counts.get("evaluator"):
                ti["evaluatorType"] = "local"
        if "chief" in counts:
            ti["useChiefInTfConfig"] = True
        if self.job_dir:
            ti["jobDir"] = self.job_dir
        return ti

    def environment(self, me: ReplicaSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update(replica_environment(
            job_id=JOB_ID, replicas=self.replicas, me=me, training_input=self.training_input(),
            metric_file=str(self.metric_file),
        ))
        return env

    def argv(self) -> list[str]:
        return trainer_argv(self.python, self.module, self.user_args, self.job_dir)

    def _start(self, spec: ReplicaSpec) -> Task:
        if not self.distributed:
            proc = subprocess.Popen(self.argv(), cwd=self.cwd, env=self.environment(spec))
            return Task(spec, proc)
        proc = subprocess.Popen(
            self.argv(), cwd=self.cwd, env=self.environment(spec), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if proc.stdout is None:
            raise RuntimeError("stdout=PIPE gave no pipe")
        reader = threading.Thread(
            target=_pump, args=(proc.stdout, f"[{spec.task_name}] ", self._lock), daemon=True
        )
        reader.start()
        return Task(spec, proc, reader)

    def run(self) -> None:
        """Run to completion; raise :class:`TaskFailed` or ``KeyboardInterrupt``."""
        with _sigterm_as_interrupt():
            try:
                for spec in self.replicas:
                    self.tasks.append(self._start(spec))
                self._wait()
            finally:
                self.stop()

    def _wait(self) -> None:
        master, others = self.tasks[0], self.tasks[1:]
        while True:
            code = master.proc.poll()
            if code is not None:
                if code != 0:
                    raise TaskFailed(f"Task {master.spec.task_name} {describe_exit(code)}.")
                return
            for task in others:
                code = task.proc.poll()
                if code not in (None, 0):
                    raise TaskFailed(f"Task {task.spec.task_name} {describe_exit(code)}.")
            time.sleep(0.1)

    def _signal(self, task: Task, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.distributed:
                os.killpg(task.proc.pid, signum)
            else:
                task.proc.send_signal(signum)

    def stop(self) -> None:
        """Stop every task still running (SIGTERM, then SIGKILL after a grace period)."""
        alive = [t for t in self.tasks if t.proc.poll() is None]
        for task in alive:
            self._signal(task, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for task in alive:
            try:
                task.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(task, signal.SIGKILL)
                task.proc.wait()
        for task in self.tasks:
            if task.reader is not None:
                task.reader.join(timeout=5)
