"""Zygotes: processes that import a framework once and fork model replicas on demand.

``python -m mlengine.prediction.zygote --kind sklearn --socket PATH`` imports numpy, the
framework (scikit-learn, TensorFlow...) and mlengine's replica code, then listens on PATH.
The control plane sends one JSON line per replica::

    {"config": {...ReplicaConfig...}, "socket": "/.../r1.sock", "log": "/.../replica-1.log",
     "sandbox": "{...SandboxPolicy...}", "env": {"HOME": ..., "TMPDIR": ...}, "peer": 1234}

and the zygote answers ``{"pid": N}`` after forking (or ``{"error": "..."}``). The child starts
a new session, sends its output to the log file, opens its socket, enters its sandbox
(:func:`mlengine.prediction.replica.confine`) and only then loads the model: the zygote itself
never loads or runs user code. The control plane starts zygotes with the replicas' allow-listed
environment (:mod:`mlengine.prediction.sandboxing`), so a child inherits nothing of the
server's; zygote and replicas answer only the process ``--peer`` (the control plane), checked
with ``SO_PEERCRED``: a confined replica can still connect to a named socket on kernels before
Landlock ABI 9, and must not be able to ask for an unconfined replica. Starting a replica this way costs a
fork and the model load (tens of milliseconds for scikit-learn) instead of a fresh
interpreter importing the framework (seconds).

A version whose packages would shadow a module the zygote already imported cannot use it:
the zygote answers ``{"error": "shadowed", "modules": [...]}`` and the control plane starts a
fresh interpreter instead. The zygote reaps its children and exits when the control plane's
connection closes (or when none connects within ``ABANDONED_SECONDS``); replicas outlive it
(they stop when their own router connection closes).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import selectors
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mlengine.prediction.protocol import peer_pid

#: What each kind of zygote imports up front (missing optional modules are skipped).
PRELOAD: dict[str, tuple[str, ...]] = {
    "base": ("numpy",),
    "sklearn": (
        "numpy", "scipy.sparse", "pandas", "joblib", "sklearn", "sklearn.pipeline", "sklearn.compose",
        "sklearn.preprocessing", "sklearn.impute", "sklearn.linear_model", "sklearn.ensemble",
        "sklearn.tree", "sklearn.neighbors", "sklearn.svm", "sklearn.feature_extraction",
        "sklearn.decomposition", "sklearn.utils",
    ),
    "xgboost": ("numpy", "xgboost", "sklearn", "joblib"),
    "tensorflow": ("numpy", "tensorflow"),
    "onnx": ("numpy", "onnxruntime"),
    "torch": ("numpy", "torch"),
}  # fmt: skip
#: A zygote nobody connected to within this long exits.
ABANDONED_SECONDS = 600.0
COMMON = ("mlengine.prediction.replica", "mlengine.prediction.engine", "mlengine.prediction.jsonio",
          "mlengine.core.sandbox", "landlockpy")


def preload(kind: str) -> list[str]:
    loaded = []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in (*PRELOAD.get(kind, ()), *COMMON):
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:
            continue
    framework_modules = {
        "sklearn": "scikit_learn", "xgboost": "xgboost_booster", "tensorflow": "tensorflow_savedmodel",
        "onnx": "onnx_runtime", "torch": "torchscript",
    }  # fmt: skip
    if kind in framework_modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"mlengine.prediction.frameworks.{framework_modules[kind]}")
    return loaded


def shadowed(pythonpath: list[str]) -> list[str]:
    """Top-level modules in ``pythonpath`` that this process has already imported."""
    clash: list[str] = []
    for entry in pythonpath:
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for name in names:
            top = name[:-3] if name.endswith(".py") else name
            if top.isidentifier() and top in sys.modules and top not in clash:
                clash.append(top)
    return clash


def _child(request: dict[str, Any], listener: socket.socket, conns: list[socket.socket]) -> None:
    """Runs in the forked child: become a replica; never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for sock in (listener, *conns):
            sock.close()
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        random.seed()
        with contextlib.suppress(ImportError):
            import numpy

            numpy.random.seed()
        from mlengine.prediction.replica import ReplicaConfig, confine, listen, serve

        config = ReplicaConfig.from_json(request["config"])
        listener = listen(request["socket"])
        if request.get("sandbox"):
            try:
                confine(request["sandbox"], request.get("env"))
            except Exception as err:
                print(f"The replica cannot enter its sandbox, so it does not load the model: {err}",
                      file=sys.stderr, flush=True)
                code = 126
                return
        code = serve(config, listener, peer=request.get("peer"))
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(kind: str, socket_path: str, peer: int | None = None) -> int:
    preload(kind)
    path = Path(socket_path)
    if path.exists() or path.is_symlink():
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(8)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    conns: list[socket.socket] = []
    buffers: dict[socket.socket, bytes] = {}
    served = False
    started = time.monotonic()
    while True:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            if not isinstance(sock, socket.socket):  # only sockets are registered
                continue
            if sock is listener:
                conn, _ = listener.accept()
                if peer is not None and peer_pid(conn) != peer:
                    conn.close()  # only the control plane may ask for replicas (a replica can connect here)
                    continue
                conns.append(conn)
                buffers[conn] = b""
                selector.register(conn, selectors.EVENT_READ)
                served = True
                continue
            data = sock.recv(65536)
            if not data:
                selector.unregister(sock)
                conns.remove(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            buffers[sock] += data
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                sock.sendall(json.dumps(_handle(json.loads(line), listener, conns)).encode() + b"\n")
        _reap()
        if not served and time.monotonic() - started > ABANDONED_SECONDS:
            return 0  # the control plane never connected (it died, or gave up while we started)
        if served and not conns:
            return 0  # the control plane is gone


def _handle(request: dict[str, Any], listener: socket.socket, conns: list[socket.socket]) -> dict[str, Any]:
    clash = shadowed(request["config"].get("pythonpath") or [])
    if clash:
        return {"error": "shadowed", "modules": clash}
    pid = os.fork()
    if pid == 0:
        _child(request, listener, conns)
    return {"pid": pid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlengine-zygote")
    parser.add_argument("--kind", required=True, choices=sorted(PRELOAD))
    parser.add_argument("--socket", required=True)
    parser.add_argument("--peer", type=int, help="pid of the only process whose connections are answered")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return run(args.kind, args.socket, args.peer)


if __name__ == "__main__":
    sys.exit(main())
