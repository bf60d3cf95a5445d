"""Traffic policies: which version answers a call on a model's name (``models/M:predict``).

Contract
--------
- :meth:`TrafficPolicy.choose` gets the model's routing entry (its default version and its
  versions by name, see :class:`ModelTraffic`) and returns the name of the version that
  answers, or None when none can (the caller answers 404: no default version).
- It runs on the server's event loop for every model-level predict call (the hot path): no
  I/O, no awaiting, constant time. A call that names a version
  (``.../versions/V:predict``) never asks the policy.
- The serving manager keeps one policy per model, made by its policy factory from the stored
  model (:func:`policy_for`) whenever the model is reconciled; policies hold no per-request
  state that would need a lock (one event loop thread).
- Today every model uses :class:`DefaultVersionPolicy` (AI Platform's behaviour); weighted
  splits, sticky keys, shadow and canary traffic plug in here as further policies.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol


class ModelTraffic(Protocol):
    """What a policy may read of a model's routing entry."""

    @property
    def default(self) -> str | None: ...

    @property
    def versions(self) -> Mapping[str, Any]: ...


class TrafficPolicy(abc.ABC):
    """Chooses the version that answers a model-level call (see the module contract)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def choose(self, model: ModelTraffic) -> str | None:
        """The name of the version that answers, or None."""


class DefaultVersionPolicy(TrafficPolicy):
    """The model's default version answers every call on its name."""

    name: ClassVar[str] = "default"

    def choose(self, model: ModelTraffic) -> str | None:
        return model.default


DEFAULT_POLICY = DefaultVersionPolicy()


def policy_for(model: Any) -> TrafficPolicy:
    """The policy of a stored model (today always the default version)."""
    return DEFAULT_POLICY
