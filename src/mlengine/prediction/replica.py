"""A model replica: the process that loads one version's model and answers predictions.

Started by a zygote (forked from a process that already imported the framework) or as
``python -m mlengine.prediction.replica --config FILE --socket PATH``. It

1. listens on the unix socket PATH (so the router can connect while the model loads), then
   enters its sandbox (:func:`confine`; :mod:`mlengine.prediction.sandboxing` says what it may
   touch): from here on it cannot read the server's home, database or environment;
2. loads the model with the version's predictor (user code runs here, never in the server);
3. greets every connection with ``READY`` or ``FAILED`` (the loader's message); connections
   from any process but the control plane's (``--peer``) are closed at once;
4. serves ``PREDICT`` frames with adaptive micro-batching: frames that arrive while the model
   is busy are merged into the next call (up to ``maxBatch`` instances), so a lone request is
   predicted at once and a crowd shares model calls. ``batchWaitMs`` > 0 additionally holds a
   batch that long when the previous one was shared (more requests are likely on their way).

It exits when its last router connection closes (the server stopped it, or died), on
SIGTERM, or when nobody connects within ``acceptTimeout`` seconds. One thread, one event loop:
a prediction blocks the loop, and that is the point (frames queue in the socket meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mlengine.prediction import protocol
from mlengine.prediction.engine import Engine
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, Predictor, load_predictor
from mlengine.prediction.observers import ObserverHub, load_observers


@dataclass
class ReplicaConfig:
    model_dir: str
    framework: str
    prediction_class: str | None = None
    framework_hint: str | None = None
    pythonpath: list[str] = field(default_factory=list)
    max_batch: int = 256
    batch_wait_ms: float = 0.0
    accept_timeout: float = 120.0
    #: ``package.module:Class`` engine observers to load (see mlengine.prediction.observers).
    observers: list[str] = field(default_factory=list)
    #: CPUs the replica should use (the version's machineType): caps numerical thread pools.
    cpus: float | None = None
    #: False: refuse to unpickle the model (MLE_MODEL_ALLOW_PICKLE).
    allow_pickle: bool = True
    #: Most instances one request may hold (MLE_PREDICT_MAX_INSTANCES).
    max_instances: int = 10_000

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply_cpu_hint(cpus: float | None) -> None:
    """Cap the threads numerical libraries use at ``cpus`` (at least 1, at most this machine's)."""
    if not cpus:
        return
    threads = max(1, min(int(cpus), os.cpu_count() or 1))
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    with contextlib.suppress(Exception):  # optional: the variables cap what this cannot
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["torch"].set_num_threads(threads)


def load(config: ReplicaConfig) -> tuple[Predictor | None, bytes, int]:
    """Load the model: ``(predictor, greeting payload, greeting kind)``."""
    apply_cpu_hint(config.cpus)
    for entry in reversed(config.pythonpath):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    options = LoadOptions(prediction_class=config.prediction_class, framework_hint=config.framework_hint,
                          allow_pickle=config.allow_pickle)
    try:
        predictor = load_predictor(Path(config.model_dir), config.framework, options)
    except ModelLoadError as err:
        return None, str(err).encode(), protocol.FAILED
    except BaseException as err:  # user code may raise anything, even SystemExit
        traceback.print_exc()
        return None, f"Loading the model failed: {type(err).__name__}: {err}".encode(), protocol.FAILED
    info = {"framework": predictor.detected_framework, "pid": os.getpid(), "features": feature_names(predictor)}
    return predictor, json.dumps(info).encode(), protocol.READY


def feature_names(predictor: Predictor) -> list[str] | None:
    """The model's input names, for monitoring: scikit-learn's ``feature_names_in_``, a
    SavedModel's ``serving_default`` inputs; None when the model does not name them."""
    names = getattr(predictor, "names", None)
    if names is None:
        signature = (getattr(predictor, "signatures", None) or {}).get("serving_default")
        names = [name for name, _ in signature.inputs] if signature is not None else None
    return [str(n)[:200] for n in names[:2000]] if isinstance(names, list) else None


def confine(policy_json: str, env: dict[str, str] | None = None) -> None:
    """Enter the sandbox ``policy_json`` (a :class:`~mlengine.core.sandbox.SandboxPolicy` as
    JSON, computed by :mod:`mlengine.prediction.sandboxing`) for good. Called after the socket
    is listening and before the model is loaded or any thread starts (Landlock confines the
    calling thread and what it starts). ``env`` (the replica's ``HOME``, ``TMPDIR``) replaces
    those of the process first; the working directory becomes the private ``HOME``. Raises when
    the sandbox cannot be entered: the replica must then exit without loading anything."""
    import tempfile

    from mlengine.core.sandbox import SandboxPolicy

    policy = SandboxPolicy.from_json(policy_json)
    confinement = policy.confinement()  # creates the private directories
    if env:
        os.environ.update(env)
        tempfile.tempdir = None  # computed again from TMPDIR
    home = os.environ.get("HOME")
    if home and home in policy.private:
        os.chdir(home)
    confinement.enter()


class _Connection(asyncio.Protocol):
    def __init__(self, server: ReplicaServer) -> None:
        self.server = server
        self.reader = protocol.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.refused = False
        self.accepted = False
        self.nonce = b""
        self.answer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        peer = self.server.peer
        if peer is not None and protocol.peer_pid(transport.get_extra_info("socket")) != peer:
            self.refused = True  # only the control plane talks to a replica
            self.transport.close()
            return
        if self.server.secret is not None:  # TCP (Ray backend): the router proves it knows the secret
            self.nonce = os.urandom(protocol.NONCE_SIZE)
            self.transport.write(self.nonce)
            return
        self._accept()

    def _accept(self) -> None:
        self.accepted = True
        self.server.connected(self)
        if self.transport is not None:
            self.transport.write(protocol.frame(self.server.greeting_kind, 0, self.server.greeting))

    def _authenticate(self, data: bytes) -> bytes | None:
        """Collect the router's answer to the nonce; the bytes after it, or None (not yet, or refused)."""
        self.answer += data
        if len(self.answer) < protocol.NONCE_SIZE:
            return None
        secret = self.server.secret or b""
        if not protocol.check_answer(secret, self.nonce, bytes(self.answer[:protocol.NONCE_SIZE])):
            self.refused = True
            if self.transport is not None:
                self.transport.close()
            return None
        rest = bytes(self.answer[protocol.NONCE_SIZE:])
        self.nonce = b""
        self._accept()
        return rest

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.nonce:
            rest = self._authenticate(data)
            if not rest:
                return
            data = rest
        try:
            frames = self.reader.feed(data)
        except protocol.ProtocolError:
            if self.transport is not None:
                self.transport.close()
            return
        for kind, request_id, payload in frames:
            if kind == protocol.PREDICT:
                self.server.enqueue(self, request_id, payload)
            elif kind == protocol.PING and self.transport is not None:
                self.transport.write(protocol.frame(protocol.PONG, request_id))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.accepted:
            self.server.disconnected(self)


class ReplicaServer:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: ReplicaConfig, predictor: Predictor | None,
                 greeting_kind: int, greeting: bytes, peer: int | None = None, secret: bytes | None = None) -> None:
        self.loop = loop
        #: The only process whose connections are answered (the control plane); None: any.
        self.peer = peer
        #: The version's secret a TCP connection must prove it knows (Ray backend); None: unix socket.
        self.secret = secret
        self.hub = ObserverHub(load_observers(config.observers)) if config.observers else None
        self.engine = (Engine(predictor, config.max_batch, self.hub, max_instances=config.max_instances)
                       if predictor is not None else None)
        self.greeting_kind = greeting_kind
        self.greeting = greeting
        self.wait = max(0.0, config.batch_wait_ms) / 1000.0
        self.pending: list[tuple[_Connection, int, bytes]] = []
        self.scheduled = False
        self.last_batch = 0
        self.connections: set[_Connection] = set()
        self.ever_connected = False

    def connected(self, conn: _Connection) -> None:
        self.connections.add(conn)
        self.ever_connected = True

    def disconnected(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self.loop.stop()

    def enqueue(self, conn: _Connection, request_id: int, body: bytes) -> None:
        self.pending.append((conn, request_id, body))
        if not self.scheduled:
            self.scheduled = True
            if self.wait and self.last_batch > 1:
                self.loop.call_later(self.wait, self.process)
            else:
                self.loop.call_soon(self.process)

    def process(self) -> None:
        self.scheduled = False
        items, self.pending = self.pending, []
        self.last_batch = len(items)
        if self.engine is None:
            replies = [(503, b'{"error":"The model is not loaded."}')] * len(items)
        else:
            replies = self.engine.handle([body for _, _, body in items])
        if len(items) == 1:
            conn, request_id, _ = items[0]
            if not conn.closed and conn.transport is not None:
                conn.transport.write(protocol.reply_frame(request_id, replies[0][0], replies[0][1]))
            return
        out: dict[_Connection, list[bytes]] = {}
        for (conn, request_id, _), (status, body) in zip(items, replies, strict=True):
            out.setdefault(conn, []).append(protocol.reply_frame(request_id, status, body))
        for conn, frames in out.items():
            if not conn.closed and conn.transport is not None:
                conn.transport.write(b"".join(frames))

    def check_abandoned(self) -> None:
        if not self.ever_connected:
            print("No router connected in time; exiting.", file=sys.stderr, flush=True)
            self.loop.stop()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def listen(socket_path: str) -> socket.socket:
    with_path = Path(socket_path)
    if with_path.exists() or with_path.is_symlink():
        with_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    return listener


def serve(config: ReplicaConfig, listener: socket.socket, on_loaded: Callable[[], None] | None = None,
          peer: int | None = None, secret: bytes | None = None, parent: int | None = None) -> int:
    """Load the model and serve until stopped; returns the process exit code. ``peer``: the
    pid of the only process whose connections are answered (the control plane); ``secret``:
    what a TCP connection must prove it knows; ``parent``: exit once that process is gone."""
    predictor, greeting, kind = load(config)
    if kind == protocol.FAILED:
        print(f"Model failed to load: {greeting.decode(errors='replace')}", file=sys.stderr, flush=True)
    gc.collect()
    gc.freeze()  # the model's objects are long-lived: keep the collector off them
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    server = ReplicaServer(loop, config, predictor, kind, greeting, peer, secret)
    if listener.family == socket.AF_UNIX:
        loop.run_until_complete(loop.create_unix_server(lambda: _Connection(server), sock=listener))
    else:
        loop.run_until_complete(loop.create_server(lambda: _Connection(server), sock=listener))
    if parent is not None:
        _watch_parent(loop, parent)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.call_later(config.accept_timeout, server.check_abandoned)
    if on_loaded is not None:
        on_loaded()
    try:
        loop.run_forever()
    finally:
        listener.close()
        if server.hub is not None:
            server.hub.close()
    return 0 if kind == protocol.READY else 1


def _watch_parent(loop: asyncio.AbstractEventLoop, parent: int) -> None:
    """Stop the loop once ``parent`` (the Ray actor that started this replica) is gone."""
    if os.getppid() != parent:
        loop.stop()
        return
    loop.call_later(1.0, _watch_parent, loop, parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlengine-replica")
    parser.add_argument("--config", required=True, help="JSON file with the replica's configuration")
    parser.add_argument("--socket", help="unix socket to listen on")
    parser.add_argument("--listen-fd", type=int, help="an inherited listening TCP socket (the Ray backend)")
    parser.add_argument("--secret-fd", type=int, help="a pipe to read the version's secret from (with --listen-fd)")
    parser.add_argument("--parent", type=int, help="exit when this process (the Ray actor) is gone")
    parser.add_argument("--sandbox", help="the sandbox policy (JSON) entered before the model is loaded")
    parser.add_argument("--peer", type=int, help="pid of the only process whose connections are answered")
    args = parser.parse_args(argv)
    config = ReplicaConfig.from_json(json.loads(Path(args.config).read_text()))
    secret = None
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
        if args.secret_fd is None:
            parser.error("--listen-fd needs --secret-fd: a TCP replica answers only who knows the secret")
        with os.fdopen(args.secret_fd, "rb") as pipe:
            secret = pipe.read()
        if not secret:
            parser.error("--secret-fd gave no secret")
    elif args.socket:
        listener = listen(args.socket)
    else:
        parser.error("one of --socket or --listen-fd is required")
    if args.sandbox:
        try:
            confine(args.sandbox)
        except Exception as err:
            print(f"The replica cannot enter its sandbox, so it does not load the model: {err}", file=sys.stderr,
                  flush=True)
            return 126
    return serve(config, listener, peer=args.peer, secret=secret, parent=args.parent)


if __name__ == "__main__":
    sys.exit(main())
