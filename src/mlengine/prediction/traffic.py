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
  model (:func:`policy_for`) whenever the model is reconciled; the new policy
  :meth:`~TrafficPolicy.adopt`\\ s the previous one's counters when its configuration is the same,
  so a reconcile does not reset a canary's window or the shadow comparison. Policies hold no
  per-request state that would need a lock (one event loop thread).
- Policies: :class:`DefaultVersionPolicy` (AI Platform's behaviour; a model without a
  ``trafficSplit``), :class:`SplitPolicy` (weighted split, sticky per routing key, shadows),
  :class:`~mlengine.prediction.canary.CanaryPolicy` (a split with guards and rollback).

The stored fields (an mlengine extension of ``Model``, Vertex-shaped) are validated here:
``trafficSplit`` (version → integer percent, summing to 100), ``routingKey`` (an instance field
or request header naming the key that makes the split sticky) and ``shadowVersions``.
"""

from __future__ import annotations

import abc
import bisect
import random
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from mlengine.errors import invalid
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


def policy_for(model: Any) -> TrafficPolicy:
    """The policy of a stored model: its canary, its split, or its default version."""
    spec = getattr(model, "spec", None) or {}
    split = spec.get("trafficSplit")
    shadows = tuple(spec.get("shadowVersions") or ())
    if spec.get("canary") and split:
        from mlengine.prediction.canary import CanaryPolicy

        return CanaryPolicy(split, spec["canary"], spec.get("routingKey"), shadows)
    if split or shadows:
        return SplitPolicy(split or ({model.default_version: 100} if model.default_version else {}),
                           spec.get("routingKey"), shadows)
    return DEFAULT_POLICY


# Validation -----------------------------------------------------------------------------------
def validate_split(value: Any, field: str = "trafficSplit") -> dict[str, int]:
    """``{"v1": 90, "v2": 10}``: version names → integer percents summing to 100."""
    from mlengine.core.names import short_name

    if not isinstance(value, Mapping) or not value:
        raise invalid(field, 'must be an object of version name to percent, like {"v1": 90, "v2": 10}')
    out: dict[str, int] = {}
    for name, share in value.items():
        short_name(name, f"{field}.{name}", "version")
        if isinstance(share, str) and share.isdigit():
            share = int(share)
        if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share <= 100:
            raise invalid(f"{field}.{name}", "must be an integer percent between 0 and 100")
        out[str(name)] = share
    if sum(out.values()) != 100:
        raise invalid(field, f"the percents must sum to 100, not {sum(out.values())}")
    return out


def validate_traffic(body: Mapping[str, Any], mask: list[str], versions: set[str],
                     current: Mapping[str, Any]) -> dict[str, Any]:
    """The traffic fields of a model patch (``mask`` holds the ones to change), checked
    against the model's ``versions``; returns the new values (None: cleared)."""
    from mlengine.prediction.canary import validate_canary

    out: dict[str, Any] = {}
    if "trafficSplit" in mask:
        split = body.get("trafficSplit")
        out["trafficSplit"] = validate_split(split) if split else None
    if "routingKey" in mask:
        key = body.get("routingKey")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 128 or not key.isprintable()):
            raise invalid("routingKey", "must be an instance field or header name (at most 128 characters)")
        out["routingKey"] = key or None
    if "shadowVersions" in mask:
        shadows = body.get("shadowVersions") or []
        if not isinstance(shadows, list) or not all(isinstance(s, str) and s for s in shadows):
            raise invalid("shadowVersions", 'must be a list of version names, like ["v3"]')
        out["shadowVersions"] = list(dict.fromkeys(shadows)) or None
    if "canary" in mask:
        out["canary"] = validate_canary(body.get("canary")) if body.get("canary") else None
    merged = {**{k: current.get(k) for k in TRAFFIC_FIELDS}, **out}
    split = merged.get("trafficSplit") or {}
    for name in [*split, *(merged.get("shadowVersions") or [])]:
        if name not in versions:
            field = "trafficSplit" if name in split else "shadowVersions"
            raise invalid(f"{field}.{name}" if field == "trafficSplit" else field,
                          f"version {name!r} does not exist in this model")
    for name in merged.get("shadowVersions") or []:
        if split.get(name):
            raise invalid("shadowVersions", f"version {name!r} serves part of the trafficSplit; a shadow "
                          "version gets a copy of the traffic and must not serve")
    canary = merged.get("canary")
    if canary:
        if not split:
            raise invalid("canary", "needs a trafficSplit naming its stable and canary versions")
        named = {canary["stable"], canary["canary"]}
        if set(split) - named or not named <= set(split):
            raise invalid("trafficSplit", f"with a canary the split names exactly its stable and canary versions "
                          f"({canary['stable']}, {canary['canary']})")
        if "trafficSplit" in mask and "canary" not in mask:  # a new split starts a new run
            out["canary"] = {k: v for k, v in canary.items() if k not in CANARY_STATUS}
    return out
