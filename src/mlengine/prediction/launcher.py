"""Starting replica processes for the ``local`` replica backend: from zygotes, or fresh interpreters.

Contract
--------
- :meth:`Launcher.launch` returns a :class:`ReplicaProcess` as soon as the process exists; the
  caller connects to its socket and waits for ``READY``/``FAILED`` (see
  :mod:`mlengine.prediction.replica`). It never loads a model itself.
- With zygotes on (``MLE_SERVING_ZYGOTES=on``, the default) the replica is forked from the
  zygote of its framework kind, started on first use and kept for the server's lifetime. A
  zygote that refuses (the version's packages would shadow a module it imported) or cannot
  start means a fresh interpreter.
- Replicas are confined like trainers (:mod:`mlengine.prediction.sandboxing`): each gets a
  sandbox policy and a private directory (``MLE_HOME/serving/replicas/<socket name>``, its
  ``HOME`` and ``TMPDIR``); zygotes and spawned replicas get the allow-listed environment, never
  the server's; both answer this process only.
- Everything here runs on the control plane's event loop; zygote requests are serialized per
  zygote. Zygotes exit when the server closes their connection (or dies); replicas exit when
  their router connection closes, so nothing outlives the server for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.core.processes import proc_start_ticks
from mlengine.prediction import sandboxing
from mlengine.prediction.frameworks._base import (
    CUSTOM,
    ONNX,
    PYTORCH,
    SCIKIT_LEARN,
    TENSORFLOW,
    XGBOOST,
    XGBOOST_NATIVE_FILES,
)
from mlengine.prediction.replica import ReplicaConfig

log = logging.getLogger("mlengine.serving")

ZYGOTE_KINDS = {
    SCIKIT_LEARN: "sklearn", XGBOOST: "xgboost", TENSORFLOW: "tensorflow", ONNX: "onnx", PYTORCH: "torch",
    CUSTOM: "base",
}  # fmt: skip


def zygote_kind(framework: str, prediction_class: str | None, model_files: set[str]) -> str:
    """Which zygote serves a version: its framework's, or ``base`` for custom routines."""
    if prediction_class:
        return ZYGOTE_KINDS.get(framework, "base") if framework in (SCIKIT_LEARN, XGBOOST, TENSORFLOW) else "base"
    if framework == XGBOOST and not model_files.intersection(XGBOOST_NATIVE_FILES):
        return "sklearn"  # a pickled scikit-learn wrapper
    return ZYGOTE_KINDS.get(framework, "base")


@dataclass
class ReplicaProcess:
    pid: int
    socket_path: str
    log_path: str
    start_ticks: int | None
    popen: subprocess.Popen[bytes] | None = None
    origin: str = "zygote"
    #: The replica's private directory (its HOME and TMPDIR), removed once it has ended.
    private_dir: str | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        info = proc_start_ticks(self.pid)
        if info is None or info[1] in ("Z", "X"):
            return False
        return self.start_ticks is None or info[0] == self.start_ticks

    def signal(self, signum: int) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)  # replicas lead their own session

    def exit_description(self) -> str:
        if self.popen is not None and self.popen.returncode is not None:
            code = self.popen.returncode
            if code < 0:
                with contextlib.suppress(ValueError):
                    return f"killed by {signal.Signals(-code).name}"
            return f"exit code {code}"
        return "exited" if not self.alive() else "running"


class _Zygote:
    def __init__(self, kind: str, popen: subprocess.Popen[bytes], socket_path: str) -> None:
        self.kind = kind
        self.popen = popen
        self.socket_path = socket_path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self.lock:
            if self.reader is None or self.writer is None:
                raise ConnectionError(f"the {self.kind} zygote is not connected")
            self.writer.write(json.dumps(message).encode() + b"\n")
            await self.writer.drain()
            line = await self.reader.readline()
        if not line:
            raise ConnectionError(f"the {self.kind} zygote closed its connection")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.popen.poll() is None:
            self.popen.terminate()


def _kill_unwanted(request: asyncio.Future[dict[str, Any]]) -> None:
    if request.cancelled() or request.exception() is not None or "pid" not in request.result():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(request.result()["pid"]), signal.SIGKILL)  # it leads its own session


class Launcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.use_zygotes = settings.serving_zygotes.lower() not in ("off", "0", "false", "no")
        base = settings.serving_dir
        base.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to 107 bytes: long MLE_HOMEs get a private /tmp dir.
        if len(str(base / "sock" / "zygote-tensorflow.sock")) < 100:
            self.sock_dir = base / "sock"
            self.sock_dir.mkdir(mode=0o700, exist_ok=True)
        else:
            self.sock_dir = Path(tempfile.mkdtemp(prefix="mle-sock-"))
        os.chmod(self.sock_dir, 0o700)
        self.log_dir = base / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        #: Private directories (HOME, TMPDIR) of replicas and zygotes.
        self.private_dir = base / sandboxing.PRIVATE_DIR
        self.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._zygotes: dict[str, _Zygote] = {}
        self._zygote_locks: dict[str, asyncio.Lock] = {}
        self._counter = itertools.count(1)
        self._prefix = f"{os.getpid()}-{int(time.time())}"

    def new_socket_path(self) -> str:
        return str(self.sock_dir / f"r{self._prefix}-{next(self._counter)}.sock")

    async def _zygote(self, kind: str) -> _Zygote | None:
        lock = self._zygote_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            found = self._zygotes.get(kind)
            if found is not None and found.alive():
                return found
            socket_path = str(self.sock_dir / f"zygote-{kind}.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)
            private = self.private_dir / f"zygote-{kind}"
            for directory in sandboxing.private_dirs(private):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.log_dir / f"zygote-{kind}.log", "ab") as out:
                # The replicas' environment, not the server's: forked replicas inherit it.
                popen = subprocess.Popen(
                    [sys.executable, "-m", "mlengine.prediction.zygote", "--kind", kind, "--socket", socket_path,
                     "--peer", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True,
                    env=sandboxing.environment(self.settings, private), cwd=sandboxing.private_dirs(private)[0],
                )
            zygote = _Zygote(kind, popen, socket_path)
            deadline = time.monotonic() + self.settings.serving_start_timeout_seconds
            try:
                while time.monotonic() < deadline and zygote.alive():
                    try:
                        zygote.reader, zygote.writer = await asyncio.open_unix_connection(socket_path)
                        break
                    except (FileNotFoundError, ConnectionRefusedError):
                        await asyncio.sleep(0.05)
            except BaseException:  # cancelled while it started: never leave it behind
                zygote.close()
                raise
            if zygote.writer is None:
                zygote.close()
                log.warning("the %s zygote did not start; replicas start as fresh interpreters", kind)
                return None
            self._zygotes[kind] = zygote
            log.info("zygote %s ready (pid %d)", kind, popen.pid)
            return zygote

    async def launch(self, kind: str, config: ReplicaConfig, log_path: Path, config_path: Path) -> ReplicaProcess:
        """Start one replica of ``config`` (see the module contract)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path = self.new_socket_path()
        private = self.private_dir / Path(socket_path).stem
        policy = sandboxing.replica_policy(self.settings, config.model_dir, config.pythonpath, private)
        policy.make_private_dirs()
        if self.use_zygotes:
            zygote = await self._zygote(kind)
            if zygote is not None:
                home, tmp = sandboxing.private_dirs(private)
                request = asyncio.ensure_future(zygote.request({
                    "config": config.to_json(), "socket": socket_path, "log": str(log_path),
                    "sandbox": policy.to_json(), "env": {"HOME": str(home), "TMPDIR": str(tmp)}, "peer": os.getpid(),
                }))
                try:
                    answer = await asyncio.shield(request)
                except asyncio.CancelledError:
                    # Keep the conversation with the zygote in step (its answer is read), then
                    # stop the replica it forked for nobody.
                    request.add_done_callback(_kill_unwanted)
                    raise
                except (ConnectionError, OSError) as err:
                    log.warning("zygote %s failed (%s); starting a fresh interpreter", kind, err)
                    answer = {"error": str(err)}
                if "pid" in answer:
                    pid = int(answer["pid"])
                    ticks = proc_start_ticks(pid)
                    return ReplicaProcess(pid, socket_path, str(log_path), ticks[0] if ticks else None,
                                          private_dir=str(private))
                log.info("zygote %s declined (%s); starting a fresh interpreter", kind, answer)
        return self._spawn(config, socket_path, log_path, config_path, private, policy.to_json())

    def _spawn(self, config: ReplicaConfig, socket_path: str, log_path: Path, config_path: Path, private: Path,
               policy: str) -> ReplicaProcess:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config.to_json()))
        extra = {"PYTHONPATH": os.pathsep.join(config.pythonpath)} if config.pythonpath else {}
        env = sandboxing.environment(self.settings, private, extra)
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mlengine.prediction.replica", "--config", str(config_path),
                 "--socket", socket_path, "--sandbox", policy, "--peer", str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True, close_fds=True,
                cwd=sandboxing.private_dirs(private)[0],
            )
        ticks = proc_start_ticks(popen.pid)
        return ReplicaProcess(popen.pid, socket_path, str(log_path), ticks[0] if ticks else None, popen, "spawn",
                              str(private))

    def close(self) -> None:
        for zygote in self._zygotes.values():
            zygote.close()
        self._zygotes.clear()
