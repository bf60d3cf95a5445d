"""Cluster ports that never collide, even with several jobs launching at once.

Contract
--------
- :func:`reserve_ports` returns ``n`` distinct ports, each *held* by a bound (not listening)
  socket, so no other process can take it; the caller closes a port's socket
  (:meth:`PortReservation.release`) right before it starts the replica that listens there.
- Ports come from ``MLE_PORT_RANGE`` (default 20000-32767: below Linux's ephemeral range, so
  outgoing connections never grab them, and above Ray's default worker ports 10002-19999).
- A port handed out is not handed out again on this machine for :data:`QUARANTINE_SECONDS`:
  a trainer may take several seconds (importing TensorFlow) between our release and its bind,
  and another job launched meanwhile must not be given the same port. The quarantine is a
  small JSON file shared by every process of this user on the machine (the control plane, the
  Ray agents of several nodes), guarded by ``flock``; the held socket covers everyone else.
- Thread- and process-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlengine.errors import Code, MLEngineError

DEFAULT_RANGE = (20000, 32767)
QUARANTINE_SECONDS = 600.0
_lock = threading.Lock()


def registry_path() -> Path:
    return Path(tempfile.gettempdir()) / f"mlengine-ports-{os.getuid()}.json"


@contextlib.contextmanager
def _registry() -> Iterator[dict[int, float]]:
    """The machine-wide quarantine (port -> wall time handed out), locked while in use."""
    path = registry_path()
    with _lock, open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            raw = json.loads(f.read() or "{}")
            recent = {int(k): float(v) for k, v in raw.items()}
        except (ValueError, AttributeError):
            recent = {}
        now = time.time()
        recent = {p: t for p, t in recent.items() if now - t < QUARANTINE_SECONDS}
        yield recent
        f.seek(0)
        f.truncate()
        f.write(json.dumps(recent))


def parse_range(text: str | None) -> tuple[int, int]:
    """``"LOW-HIGH"`` → (LOW, HIGH); the default range for an empty value."""
    if not text:
        return DEFAULT_RANGE
    try:
        low_text, high_text = text.split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise MLEngineError(Code.INVALID_ARGUMENT,
                            f"MLE_PORT_RANGE must look like 20000-32767, got {text!r}") from None
    if not 1024 <= low < high <= 65535:
        raise MLEngineError(Code.INVALID_ARGUMENT,
                            f"MLE_PORT_RANGE {text!r} must be LOW-HIGH with 1024 <= LOW < HIGH <= 65535")
    return low, high


def _try_hold(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", port))  # all interfaces: a clash on any address counts
    except OSError:
        sock.close()
        return None
    return sock


@dataclass
class PortReservation:
    """Ports held until released, one socket per port."""

    ports: list[int]
    _sockets: dict[int, socket.socket] = field(default_factory=dict, repr=False)

    def release(self, port: int | None = None) -> None:
        """Let go of one port (or all): the replica that listens there may bind it now."""
        chosen = list(self._sockets) if port is None else [port]
        for p in chosen:
            sock = self._sockets.pop(p, None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


def reserve_ports(n: int, port_range: tuple[int, int] = DEFAULT_RANGE) -> PortReservation:
    """Hold ``n`` free, recently unused ports from ``port_range``."""
    low, high = port_range
    reservation = PortReservation([])
    with _registry() as recent:
        now = time.time()
        candidates = [p for p in range(low, high + 1) if p not in recent]
        random.shuffle(candidates)
        for port in candidates:
            if len(reservation.ports) == n:
                break
            sock = _try_hold(port)
            if sock is None:
                continue
            reservation.ports.append(port)
            reservation._sockets[port] = sock
            recent[port] = now
    if len(reservation.ports) < n:
        reservation.release()
        raise MLEngineError(Code.RESOURCE_EXHAUSTED,
                            f"No {n} free ports in MLE_PORT_RANGE {low}-{high} for the job's replicas")
    return reservation
