"""A canary: a split between a stable and a canary version, with guards and automatic rollback.

The model's ``canary`` field (an mlengine extension)::

    {"stable": "v1", "canary": "v2",
     "maxErrorRate": 0.05,        # canary error rate minus the stable's, at most
     "maxLatencyRatio": 2.0,      # canary p99 latency / stable p99 latency, at most
     "maxDisagreement": 0.1,      # share of canary predictions that differ from the stable's
     "windowSeconds": 60, "minRequests": 20,
     "promotion": {"steps": [25, 50, 100], "intervalSeconds": 300}}

Every guard is optional. :class:`CanaryPolicy` is a :class:`~mlengine.prediction.traffic.SplitPolicy`
that also sees every answer (status, latency) of both versions; with ``maxDisagreement`` the
calls the canary answers are mirrored to the stable version and the answers compared (never
returned). Over the last ``windowSeconds``, once the canary answered ``minRequests`` calls, a
guard that is crossed rolls the canary back: its share goes to 0 at once (in memory, the next
call already avoids it), and the model's stored ``trafficSplit`` and ``canary.rollback``
(``time``, ``reason``, the ``share`` it had) say so. With ``promotion`` the canary's share goes
up to the next step every ``intervalSeconds`` while the guards hold (``canary.lastStepTime``;
``canary.promotedTime`` once it reaches 100). Errors are answers with status >= 400 except
overload and request-size refusals (429, 413, 415), which say nothing about the model.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from mlengine.core.timeutil import rfc3339, utcnow
from mlengine.errors import invalid
from mlengine.prediction.shadow import ShadowStats
from mlengine.prediction.traffic import CANARY_STATUS, SpecWriter, SplitPolicy, TrafficPolicy

#: Most answers remembered per version and window (older ones are dropped first).
MAX_SAMPLES = 20_000
CHECK_EVERY = 0.2
NOT_ERRORS = frozenset({429, 413, 415})
GUARDS = ("maxErrorRate", "maxLatencyRatio", "maxDisagreement")


def _number(value: Any, field: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low or (
            high is not None and value > high):
        raise invalid(field, f"must be a number >= {low:g}" + (f" and <= {high:g}" if high is not None else ""))
    return float(value)


def validate_canary(value: Any) -> dict[str, Any]:
    """The stored form of a ``canary`` field (see the module doc); errors name the field."""
    from mlengine.core.names import short_name

    if not isinstance(value, Mapping):
        raise invalid("canary", 'must be an object like {"stable": "v1", "canary": "v2", "maxErrorRate": 0.05}')
    known = {"stable", "canary", "windowSeconds", "minRequests", "promotion", *GUARDS, *CANARY_STATUS}
    for key in value:
        if key not in known:
            raise invalid(f"canary.{key}", "unknown field of canary")
    out: dict[str, Any] = {}
    for key in ("stable", "canary"):
        out[key] = short_name(value.get(key), f"canary.{key}", "version")
    if out["stable"] == out["canary"]:
        raise invalid("canary.canary", "must differ from canary.stable")
    for key, high in (("maxErrorRate", 1.0), ("maxLatencyRatio", None), ("maxDisagreement", 1.0)):
        if value.get(key) is not None:
            out[key] = _number(value[key], f"canary.{key}", 0.0, high)
    out["windowSeconds"] = _number(value.get("windowSeconds", 60), "canary.windowSeconds", 1.0, 86400.0)
    minimum = value.get("minRequests", 20)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise invalid("canary.minRequests", "must be an integer >= 1")
    out["minRequests"] = minimum
    promotion = value.get("promotion")
    if promotion is not None:
        if not isinstance(promotion, Mapping):
            raise invalid("canary.promotion", 'must be an object like {"steps": [25, 50, 100], "intervalSeconds": 300}')
        steps = promotion.get("steps")
        if (not isinstance(steps, list) or not steps
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
                or steps != sorted(set(steps))):
            raise invalid("canary.promotion.steps", "must be increasing integer percents (1..100)")
        interval = _number(promotion.get("intervalSeconds", 300), "canary.promotion.intervalSeconds", 1.0)
        out["promotion"] = {"steps": steps, "intervalSeconds": interval}
    return out


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Window:
    """Answers of one version over the last ``seconds``: ``(time, error, latency)``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, bool, float]] = deque(maxlen=MAX_SAMPLES)

    def add(self, now: float, error: bool, latency: float) -> None:
        self.samples.append((now, error, latency))

    def trim(self, now: float) -> None:
        start = now - self.seconds
        while self.samples and self.samples[0][0] < start:
            self.samples.popleft()

    def error_rate(self) -> float:
        return sum(1 for s in self.samples if s[1]) / len(self.samples) if self.samples else 0.0

    def p99(self) -> float:
        return p99([s[2] for s in self.samples if not s[1]] or [0.0])


class CanaryPolicy(SplitPolicy):
    """A split whose canary is rolled back when a guard is crossed (see the module doc)."""

    name: ClassVar[str] = "canary"
    observes = True

    def __init__(self, split: Mapping[str, int], canary: Mapping[str, Any], routing_key: str | None = None,
                 shadows: tuple[str, ...] = ()) -> None:
        super().__init__(split, routing_key, shadows)
        self.canary = dict(canary)
        self.stable_name, self.canary_name = str(canary["stable"]), str(canary["canary"])
        seconds = float(canary.get("windowSeconds", 60))
        self.windows = {self.stable_name: Window(seconds), self.canary_name: Window(seconds)}
        self.agreement: deque[tuple[float, bool]] = deque(maxlen=MAX_SAMPLES)
        #: The canary's answers against the stable's (mirrored calls, maxDisagreement only).
        self.versus = ShadowStats()
        self.done = bool(canary.get("rollback") or canary.get("promotedTime"))
        self.started = time.monotonic()
        self.last_check = 0.0
        self.store: SpecWriter | None = None
        self.rollback_reason: str | None = None

    def config(self) -> tuple[Any, ...]:
        settings = tuple(sorted((k, repr(v)) for k, v in self.canary.items() if k not in CANARY_STATUS))
        return (*super().config(), settings)

    @property
    def share(self) -> int:
        return self.split.get(self.canary_name, 0)

    def adopt(self, previous: TrafficPolicy, store: SpecWriter | None) -> None:
        super().adopt(previous, store)
        self.store = store
        if isinstance(previous, CanaryPolicy) and previous.config() == self.config():
            self.windows, self.agreement, self.versus = previous.windows, previous.agreement, previous.versus
            self.started, self.rollback_reason = previous.started, previous.rollback_reason
            if previous.rollback_reason is not None:  # rolled back in memory, not yet stored
                self._set_share(0)
                self.done = True

    def mirror(self, version: str) -> tuple[str, ...]:
        if version == self.canary_name and self.canary.get("maxDisagreement") is not None and not self.done:
            return (*self.shadows, self.stable_name)
        return self.shadows

    def record_mirror(self, served: str, shadow: str, served_answer: tuple[int, bytes],
                      shadow_answer: tuple[int, bytes]) -> None:
        if served == self.canary_name and shadow == self.stable_name:
            agreed = self.versus.record(shadow_answer, served_answer)
            if agreed is not None:
                self.agreement.append((time.monotonic(), agreed))
                self._maybe_check()
        super().record_mirror(served, shadow, served_answer, shadow_answer)

    def observe(self, version: str, status: int, seconds: float, body: bytes, answer: bytes) -> None:
        window = self.windows.get(version)
        if window is None or self.done:
            return
        window.add(time.monotonic(), status >= 400 and status not in NOT_ERRORS, seconds)
        self._maybe_check()

    def _maybe_check(self) -> None:
        now = time.monotonic()
        if not self.done and now - self.last_check >= CHECK_EVERY:
            self.last_check = now
            self.check(now)

    # Guards -------------------------------------------------------------------------------
    def crossed(self, now: float) -> str | None:
        """Why the canary must be rolled back now, or None."""
        stable, canary = self.windows[self.stable_name], self.windows[self.canary_name]
        stable.trim(now)
        canary.trim(now)
        minimum = int(self.canary.get("minRequests", 20))
        if len(canary.samples) < minimum:
            return None
        window = f"over the last {canary.seconds:g} s"
        limit = self.canary.get("maxErrorRate")
        if limit is not None:
            rate, base = canary.error_rate(), stable.error_rate()
            if rate - base > limit:
                return (f"error rate {rate:.1%} of {len(canary.samples)} calls {window}, against {base:.1%} on "
                        f"the stable version {self.stable_name} (maxErrorRate {limit:g})")
        limit = self.canary.get("maxLatencyRatio")
        if limit is not None and len(stable.samples) >= minimum:
            ours, theirs = canary.p99(), stable.p99()
            if theirs > 0 and ours > limit * theirs:
                return (f"p99 latency {ours * 1000:.1f} ms {window}, {ours / theirs:.2f} times the stable version's "
                        f"{theirs * 1000:.1f} ms (maxLatencyRatio {limit:g})")
        limit = self.canary.get("maxDisagreement")
        if limit is not None:
            start = now - canary.seconds
            while self.agreement and self.agreement[0][0] < start:
                self.agreement.popleft()
            if len(self.agreement) >= minimum:
                rate = sum(1 for _, ok in self.agreement if not ok) / len(self.agreement)
                if rate > limit:
                    return (f"{rate:.1%} of {len(self.agreement)} calls {window} disagreed with the stable version "
                            f"{self.stable_name} (maxDisagreement {limit:g})")
        return None

    def check(self, now: float) -> None:
        reason = self.crossed(now)
        if reason is not None:
            self.roll_back(reason)
            return
        promotion = self.canary.get("promotion")
        if not promotion or len(self.windows[self.canary_name].samples) < int(self.canary.get("minRequests", 20)):
            return
        if now - self.started < float(promotion["intervalSeconds"]):
            return
        following = [step for step in promotion["steps"] if step > self.share]
        if following:
            self.promote(following[0])

    def _set_share(self, share: int) -> None:
        SplitPolicy.__init__(self, {self.stable_name: 100 - share, self.canary_name: share}, self.routing_key,
                             self.shadows)

    def roll_back(self, reason: str) -> None:
        """Send the canary nothing from now on; record why and when in the model."""
        stats, share = self.shadow_stats, self.share
        self._set_share(0)
        self.shadow_stats = stats
        self.done = True
        self.rollback_reason = reason
        record = {"time": rfc3339(utcnow()), "reason": reason, "share": share}
        stable, canary = self.stable_name, self.canary_name

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            current = dict(spec.get("canary") or {})
            if current.get("canary") != canary or current.get("rollback"):
                return spec  # the canary was changed meanwhile, or already rolled back
            current["rollback"] = record
            return {**spec, "trafficSplit": {stable: 100, canary: 0}, "canary": current}

        if self.store is not None:
            self.store(change)

    def promote(self, share: int) -> None:
        stats = self.shadow_stats
        previous = self.share
        self._set_share(share)
        self.shadow_stats = stats
        self.started = time.monotonic()
        now = rfc3339(utcnow())
        stable, canary = self.stable_name, self.canary_name
        if share >= 100:
            self.done = True

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            current = dict(spec.get("canary") or {})
            split = spec.get("trafficSplit") or {}
            if current.get("canary") != canary or current.get("rollback") or split.get(canary) != previous:
                return spec
            current["lastStepTime"] = now
            if share >= 100:
                current["promotedTime"] = now
            return {**spec, "trafficSplit": {stable: 100 - share, canary: share}, "canary": current}

        if self.store is not None:
            self.store(change)

    def status(self) -> dict[str, Any]:
        out = super().status()
        now = time.monotonic()
        windows = {}
        for name, window in self.windows.items():
            window.trim(now)
            windows[name] = {"requests": len(window.samples), "errorRate": round(window.error_rate(), 6),
                             "p99LatencyMs": round(window.p99() * 1000, 3)}
        out["canary"] = {"stable": self.stable_name, "canary": self.canary_name, "share": self.share,
                         "windows": windows}
        if self.agreement:
            out["canary"]["disagreementRate"] = round(
                sum(1 for _, ok in self.agreement if not ok) / len(self.agreement), 6)
        if self.versus.requests:
            out["canary"]["againstStable"] = self.versus.render()
        if self.rollback_reason:
            out["canary"]["rollbackReason"] = self.rollback_reason
        return out
