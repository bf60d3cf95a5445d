"""Traffic policies: which version answers a call on a model's name (``models/M:predict``).

Contract
--------
- :meth:`TrafficPolicy.choose` gets the model's routing entry (its default version and its
  versions by name, see :class:`ModelTraffic`) and the call's routing key (None unless the
  policy has a :attr:`~TrafficPolicy.routing_key`), and returns the name of the version that
  answers, or None when none can (the caller answers 404: no default version).
- It runs on the server's event loop for every model-level predict call (the hot path): no
  I/O, no awaiting, constant time. A call that names a version
  (``.../versions/V:predict``) never asks the policy.
- :attr:`TrafficPolicy.shadows` are the versions that get a copy of every model-level call
  (answers recorded and compared, never returned, see :mod:`mlengine.prediction.shadow`);
  :meth:`TrafficPolicy.observe` sees every model-level answer off the response's path (the
  canary's guards read it, :mod:`mlengine.prediction.canary`).
- The serving manager keeps one policy per model, made by its policy factory from the stored
  model (:func:`mlengine.prediction.policies.policy_for`) whenever the model is reconciled; the new policy
  :meth:`~TrafficPolicy.adopt`\\ s the previous one's counters when its configuration is the same,
  so a reconcile does not reset a canary's window or the shadow comparison. Policies hold no
  per-request state that would need a lock (one event loop thread).
- Policies: :class:`DefaultVersionPolicy` (AI Platform's behaviour; a model without a
  ``trafficSplit``), :class:`SplitPolicy` (weighted split, sticky per routing key, shadows),
  :class:`~mlengine.prediction.canary.CanaryPolicy` (a split with guards and rollback).

The stored fields (an mlengine extension of ``Model``, Vertex-shaped: ``trafficSplit``,
``routingKey``, ``shadowVersions``, ``canary``) are validated, and turned into a policy, by
:mod:`mlengine.prediction.policies`.
"""

from __future__ import annotations

import abc
import bisect
import random
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from mlengine.prediction.shadow import ShadowStats

#: The response header that says which version answered a model-level call.
VERSION_HEADER = b"x-mle-version"
TRAFFIC_FIELDS = ("trafficSplit", "routingKey", "shadowVersions", "canary")
#: Output-only fields of a stored ``canary`` (what happened in its run).
CANARY_STATUS = ("rollback", "promotedTime", "lastStepTime")
#: Writes a change of the model's stored spec: ``store(change)``, ``change(spec) -> spec``.
SpecWriter = Callable[[Callable[[dict[str, Any]], dict[str, Any]]], None]


class ModelTraffic(Protocol):
    """What a policy may read of a model's routing entry."""

    @property
    def default(self) -> str | None: ...

    @property
    def versions(self) -> Mapping[str, Any]: ...


class TrafficPolicy(abc.ABC):
    """Chooses the version that answers a model-level call (see the module contract)."""

    name: ClassVar[str]
    #: Instance field or header whose value makes the choice sticky; None: not sticky.
    routing_key: str | None = None
    #: Versions that get a copy of every model-level call.
    shadows: tuple[str, ...] = ()
    #: False: :meth:`observe` does nothing (the router skips the bookkeeping).
    observes: bool = False

    @abc.abstractmethod
    def choose(self, model: ModelTraffic, key: str | None = None) -> str | None:
        """The name of the version that answers, or None."""

    def observe(self, version: str, status: int, seconds: float, body: bytes, answer: bytes) -> None:  # noqa: B027
        """A model-level call answered by ``version`` (only when :attr:`observes`)."""

    def mirror(self, version: str) -> tuple[str, ...]:
        """Versions that get a copy of a call ``version`` answers (default: :attr:`shadows`)."""
        return self.shadows

    def adopt(self, previous: TrafficPolicy, store: SpecWriter | None) -> None:  # noqa: B027
        """Take over ``previous``'s counters when the configuration is the same; keep ``store``."""

    def record_mirror(self, served: str, shadow: str, served_answer: tuple[int, bytes],  # noqa: B027
                      shadow_answer: tuple[int, bytes]) -> None:
        """The answers of a call ``served`` answered and its copy ``shadow`` answered (after
        the client got its response)."""

    def status(self) -> dict[str, Any]:
        """What the policy measured so far (rendered by ``models/M/trafficStatus``)."""
        return {"policy": self.name}


class DefaultVersionPolicy(TrafficPolicy):
    """The model's default version answers every call on its name."""

    name: ClassVar[str] = "default"

    def choose(self, model: ModelTraffic, key: str | None = None) -> str | None:
        return model.default


DEFAULT_POLICY = DefaultVersionPolicy()


def bucket_of(key: str) -> int:
    """The percent bucket (0..99) of a routing key: stable across processes and restarts."""
    return zlib.crc32(key.encode()) % 100


class SplitPolicy(TrafficPolicy):
    """A weighted split: each call goes to a version with its share's probability; with a
    routing key the same key always lands on the same version (its bucket in the split)."""

    name: ClassVar[str] = "split"

    def __init__(self, split: Mapping[str, int], routing_key: str | None = None,
                 shadows: tuple[str, ...] = ()) -> None:
        self.split = {name: int(share) for name, share in split.items() if int(share) > 0}
        self.routing_key = routing_key or None
        self.shadows = tuple(shadows)
        self._names = list(self.split)
        self._bounds: list[int] = []
        total = 0
        for name in self._names:
            total += self.split[name]
            self._bounds.append(total)
        self._total = total
        self._random = random.random
        self.shadow_stats: dict[str, ShadowStats] = {}

    def config(self) -> tuple[Any, ...]:
        return (self.name, tuple(sorted(self.split.items())), self.routing_key, self.shadows)

    def choose(self, model: ModelTraffic, key: str | None = None) -> str | None:
        if not self._total:
            return model.default
        point = bucket_of(key) * self._total // 100 if key is not None else int(self._random() * self._total)
        return self._names[bisect.bisect_right(self._bounds, point)]

    def adopt(self, previous: TrafficPolicy, store: SpecWriter | None) -> None:
        if isinstance(previous, SplitPolicy):
            self.shadow_stats = previous.shadow_stats  # the comparison goes on across reconciles

    def record_mirror(self, served: str, shadow: str, served_answer: tuple[int, bytes],
                      shadow_answer: tuple[int, bytes]) -> None:
        if shadow in self.shadows:
            stats = self.shadow_stats.get(shadow)
            if stats is None:
                stats = self.shadow_stats[shadow] = ShadowStats()
            stats.record(served_answer, shadow_answer)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.name, "trafficSplit": dict(self.split)}
        if self.shadow_stats:
            out["shadows"] = {name: stats.render() for name, stats in self.shadow_stats.items()}
        return out
