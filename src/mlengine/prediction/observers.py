"""Engine observers: see every parsed request and its predictions, off the hot path.

Contract
--------
- An :class:`EngineObserver` receives :class:`Observation` batches in
  :meth:`EngineObserver.observe`, always on the :class:`ObserverHub`'s own thread, never on the
  thread that predicts: a slow or failing observer delays nothing but itself (an exception is
  logged and the observer keeps receiving). Observations arrive in the order requests were
  answered, in batches of whatever accumulated meanwhile.
- The engine's cost is one truthiness check per batch of requests when no observer is
  registered; with observers, one ``deque.append`` per request (no copy of the data: the
  parsed instances and predictions are handed over as they are, and observers must not
  mutate them).
- The queue is bounded (``capacity`` observations): when observers fall that far behind, new
  observations are dropped and counted (``ObserverHub.dropped``), the predict path never waits.
- :meth:`ObserverHub.close` delivers what is queued (waiting up to ``timeout``), then calls
  each observer's :meth:`EngineObserver.close`.

Request/response logging and per-version metrics hang here.
"""

from __future__ import annotations

import abc
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mlengine.replica")


@dataclass(frozen=True)
class Observation:
    """One answered request: when (wall clock), the HTTP status and exact response body, the
    parsed ``instances`` and ``kwargs`` (None when the body did not parse) and the
    ``predictions`` (None when the request failed; the body holds ``{"error": ...}``)."""

    time: float
    status: int
    response: bytes
    instances: list[Any] | None
    kwargs: dict[str, Any] | None
    predictions: list[Any] | None


class EngineObserver(abc.ABC):
    """Sees what the engine answered (see the module contract)."""

    @abc.abstractmethod
    def observe(self, batch: Sequence[Observation]) -> None:
        """Handle a batch of observations (on the hub's thread)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release whatever the observer holds."""


class ObserverHub:
    """Queues observations and hands them to observers on a background thread."""

    def __init__(self, observers: Sequence[EngineObserver], capacity: int = 100_000) -> None:
        self.observers = list(observers)
        self.capacity = capacity
        self.dropped = 0
        self._queue: collections.deque[Observation] = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mle-observers", daemon=True)
        self._thread.start()

    def put(self, observation: Observation) -> None:
        """Queue one observation; never blocks."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            return
        self._queue.append(observation)

    def flush_soon(self) -> None:
        """Wake the observer thread (once per batch of requests)."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            batch: list[Observation] = []
            while self._queue:
                batch.append(self._queue.popleft())
            if batch:
                for observer in self.observers:
                    try:
                        observer.observe(batch)
                    except Exception:  # an observer's trouble never reaches predictions
                        log.exception("observer %s failed", type(observer).__name__)
            if self._closed and not self._queue:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then close the observers."""
        self._closed = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
        for observer in self.observers:
            try:
                observer.close()
            except Exception:
                log.exception("closing observer %s failed", type(observer).__name__)


def load_observers(paths: Sequence[str]) -> list[EngineObserver]:
    """Instantiate ``package.module:Class`` observers (no arguments)."""
    import importlib

    found: list[EngineObserver] = []
    for path in paths:
        module, _, name = path.partition(":")
        observer = getattr(importlib.import_module(module), name)()
        if not isinstance(observer, EngineObserver):
            raise TypeError(f"{path} is not an EngineObserver")
        found.append(observer)
    return found
