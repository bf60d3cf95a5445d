"""The traffic fields of a stored model, validated, and the policy they make.

``trafficSplit`` (version → integer percent, summing to 100), ``routingKey`` (an instance field
or request header whose value makes the split sticky), ``shadowVersions`` (get a copy of the
traffic) and ``canary`` (:mod:`mlengine.prediction.canary`): an mlengine extension of ``Model``,
Vertex-shaped, set by ``models.patch`` with an update mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlengine.errors import invalid
from mlengine.prediction.canary import CanaryPolicy, validate_canary
from mlengine.prediction.traffic import CANARY_STATUS, DEFAULT_POLICY, TRAFFIC_FIELDS, SplitPolicy, TrafficPolicy


def policy_for(model: Any) -> TrafficPolicy:
    """The policy of a stored model: its canary, its split, or its default version."""
    spec = getattr(model, "spec", None) or {}
    split = spec.get("trafficSplit")
    shadows = tuple(spec.get("shadowVersions") or ())
    if spec.get("canary") and split:
        return CanaryPolicy(split, spec["canary"], spec.get("routingKey"), shadows)
    if split or shadows:
        return SplitPolicy(split or ({model.default_version: 100} if model.default_version else {}),
                           spec.get("routingKey"), shadows)
    return DEFAULT_POLICY


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
