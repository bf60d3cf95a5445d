"""Replica backends: where a model version's replicas run and how the router reaches them.

Contract
--------
- One backend per control plane, chosen by ``MLE_SERVING_BACKEND``
  (:func:`mlengine.prediction.backends.create_backend`). It lives on the server's event loop:
  every method is called from the loop's thread and none may block it (blocking work goes to
  a thread). The backend owns whatever it starts (processes, zygotes, actors); the version
  pools (:mod:`mlengine.prediction.pool`) own the scaling decisions and call the backend.
- :meth:`ReplicaBackend.start_replica` starts ONE replica of the version described by a
  :class:`ReplicaTemplate` and returns its :class:`ReplicaChannel` once the replica has loaded
  the model and can answer. A model that does not load, a replica that dies or does not become
  ready within ``template.start_timeout`` raises :class:`ReplicaStartError` whose message is
  the loader's (or says why), leaving nothing running. Cancelling the call (asyncio) stops
  the replica being started.
- The router reaches a replica only through its channel (the hot path):
  :meth:`ReplicaChannel.send` forwards a raw request body and returns a future of
  ``(status, body, headers)``; the channel never hangs a request: when the replica goes away
  every pending request gets 503 with ``Retry-After``, and a request past its deadline gets
  504 from :meth:`ReplicaChannel.expire`. ``channel.pending`` is the number-aware collection
  of requests in flight (``len()`` is what load balancing reads).
- Liveness: when a replica's channel closes, for whatever reason, the backend calls
  ``owner.replica_lost(channel)`` exactly once, after failing its pending requests;
  ``channel.stopping`` tells a stop that was asked for (:meth:`ReplicaChannel.stop`) from a
  crash. :meth:`ReplicaChannel.ping` checks an idle replica (False: it stopped answering).
- :meth:`ReplicaBackend.reconcile` runs once at start-up, after a restart, with the versions
  that should be served: a backend whose replicas survive a control plane (actors) adopts or
  stops them; one whose replicas die with it (local processes) removes their leftovers.
- :meth:`ReplicaBackend.close` stops everything the backend started; called at shutdown.

The conformance suite every backend runs is :mod:`mlengine.testing.replica_backends`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mlengine.prediction.replica import ReplicaConfig

#: ``(HTTP status, body, extra headers)`` of one prediction, as the router sends it.
Result = tuple[int, bytes, list[tuple[bytes, bytes]]]


class ReplicaStartError(Exception):
    """A replica did not become ready; the message is the loader's (or why it died)."""


@dataclass(frozen=True)
class ReplicaTemplate:
    """Everything a backend needs to start replicas of one version."""

    #: Unique and stable for the version's lifetime (``project/model/version#pk``).
    key: str
    #: How messages name the version: ``version v1 of model fares``.
    label: str
    config: ReplicaConfig
    #: The version's managed directory (logs and runtime files go under it).
    root: Path
    #: Which pre-imported runtime suits the version (``sklearn``, ``tensorflow``, ``base``...);
    #: a hint a backend may ignore.
    runtime_kind: str = "base"
    #: CPUs one replica should use (from the version's ``machineType``), or None.
    cpus: float | None = None
    start_timeout: float = 180.0
    extra: dict[str, Any] = field(default_factory=dict)


class ReplicaOwner(Protocol):
    """What a channel reports to: the version's pool."""

    label: str

    @property
    def request_timeout(self) -> float: ...

    def replica_lost(self, replica: ReplicaChannel) -> None: ...


class ReplicaChannel(abc.ABC):
    """The router's connection to one ready replica (see the module contract)."""

    #: Requests in flight (``len()`` is the replica's load).
    pending: Sized
    #: True once the connection is gone.
    closed: bool
    #: True once :meth:`stop` was called.
    stopping: bool
    #: What the replica said when ready: ``{"framework": ..., "pid": ...}``.
    info: dict[str, Any]

    @abc.abstractmethod
    def send(self, body: bytes, deadline: float) -> asyncio.Future[Result]:
        """Forward a raw request body; the future resolves to the replica's answer."""

    @abc.abstractmethod
    def expire(self, now: float) -> bool:
        """Fail requests past their deadline with 504; True if any did (the replica is stuck)."""

    @abc.abstractmethod
    def ping(self, now: float) -> bool:
        """Check an idle replica; False when it stopped answering."""

    @abc.abstractmethod
    def stop(self, kill_after: float = 3.0) -> None:
        """Stop the replica: gracefully, then for good after ``kill_after`` seconds."""

    @abc.abstractmethod
    def describe_exit(self) -> str:
        """How the replica ended (``exit code 1``, ``killed by SIGKILL``) or ``running``."""


class ReplicaBackend(abc.ABC):
    """Starts replicas and connects the router to them (see the module contract)."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def start_replica(self, template: ReplicaTemplate, owner: ReplicaOwner) -> ReplicaChannel:
        """Start one replica of ``template`` and return its channel once it is ready."""

    async def reconcile(self, templates: Iterable[ReplicaTemplate]) -> None:  # noqa: B027 - optional hook
        """At start-up: adopt or clean up what a previous control plane left behind."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop everything this backend started."""
