"""Shadow comparison: how a shadow version's answers differ from the ones that were served.

A shadow version gets a copy of every model-level call; its answer is never returned, only
compared here with the served one, after the client got its response (the router schedules the
comparison as a task). Per shadow version :class:`ShadowStats` counts requests, errors,
predictions compared and the agreement rate (equal predictions: numbers within a relative
1e-6, anything else by equality), and for numeric outputs the mean absolute and the largest
difference per output feature (``value`` for scalar predictions, the key for objects, the
index for lists). Counters only: memory stays constant whatever the traffic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Most output features tracked per shadow version (the rest are counted in agreement only).
MAX_FEATURES = 64


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _equal(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x_, y_) for x_, y_ in zip(a, b, strict=True))
    return bool(a == b)


def _features(prediction: Any) -> list[tuple[str, float]]:
    value = _number(prediction)
    if value is not None:
        return [("value", value)]
    items: Iterable[tuple[Any, Any]]
    if isinstance(prediction, dict):
        items = prediction.items()
    elif isinstance(prediction, list):
        items = enumerate(prediction)
    else:
        return []
    out = []
    for key, item in items:
        number = _number(item)
        if number is not None:
            out.append((str(key), number))
    return out


@dataclass
class FeatureDiff:
    count: int = 0
    total: float = 0.0
    largest: float = 0.0

    def add(self, diff: float) -> None:
        self.count += 1
        self.total += diff
        self.largest = max(self.largest, diff)


@dataclass
class ShadowStats:
    """What one shadow version did against the served answers."""

    requests: int = 0
    errors: int = 0
    compared: int = 0
    agreed: int = 0
    features: dict[str, FeatureDiff] = field(default_factory=dict)

    def record(self, served: tuple[int, bytes], shadow: tuple[int, bytes]) -> bool | None:
        """Compare one call's answers; the fraction agreeing, or None when not comparable."""
        self.requests += 1
        if shadow[0] != 200:
            self.errors += 1
            return None
        if served[0] != 200:
            return None
        try:
            ours = json.loads(served[1]).get("predictions")
            theirs = json.loads(shadow[1]).get("predictions")
        except (ValueError, AttributeError):
            return None
        if not isinstance(ours, list) or not isinstance(theirs, list) or len(ours) != len(theirs):
            self.compared += max(len(ours) if isinstance(ours, list) else 1, 1)
            return False
        agreed = 0
        for a, b in zip(ours, theirs, strict=True):
            self.compared += 1
            if _equal(a, b):
                agreed += 1
            mine = dict(_features(b))
            for key, value in _features(a):
                other = mine.get(key)
                if other is None:
                    continue
                stats = self.features.get(key)
                if stats is None:
                    if len(self.features) >= MAX_FEATURES:
                        continue
                    stats = self.features[key] = FeatureDiff()
                stats.add(abs(value - other))
        self.agreed += agreed
        return agreed == len(ours)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "errors": self.errors,
                               "predictionsCompared": self.compared, "predictionsAgreed": self.agreed}
        if self.compared:
            out["agreementRate"] = round(self.agreed / self.compared, 6)
            out["disagreementRate"] = round(1 - self.agreed / self.compared, 6)
        if self.features:
            out["featureDifferences"] = {
                key: {"meanAbsoluteDifference": round(f.total / f.count, 9),
                      "maxAbsoluteDifference": round(f.largest, 9), "count": f.count}
                for key, f in sorted(self.features.items()) if f.count}
        return out
