"""The server's own metrics (Prometheus), one registry for every layer.

Contract
--------
- Any module counts through the functions here (:func:`prediction`, :func:`scale_from_zero`,
  :func:`request_log_dropped`, :func:`job_queue_wait`); none imports ``prometheus_client``
  itself, so it stays out of ``mle --help`` (it is imported on the first count).
- Cheap on the predict path: the children of one version (requests by code, latency, errors)
  are resolved once and kept in a dict, so a counted prediction is a dict lookup, two
  increments and one histogram observation (each a lock-protected float add), no formatting.
- Counters live as long as the process (a restarted server starts from zero, as Prometheus
  expects); gauges of the store and the serving manager (jobs by state, replicas per version)
  are computed when scraped, by the collector the API registers (:func:`registry`).
- Thread-safe: counts come from the event loop, the scheduler and observer threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

#: Latency buckets (seconds) of predictions: 1 ms to 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Queue-wait buckets (seconds) of jobs: 100 ms to 1 day.
WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)

_lock = threading.Lock()
_state: dict[str, Any] = {}
_versions: dict[tuple[str, str, str], _VersionMetrics] = {}


def _metrics() -> dict[str, Any]:
    """The metric families, created on first use in the module's registry."""
    if _state:
        return _state
    with _lock:
        if _state:
            return _state
        from prometheus_client import CollectorRegistry, Counter, Histogram

        reg = CollectorRegistry(auto_describe=True)
        version = ["project", "model", "version"]
        made = {
            "registry": reg,
            "requests": Counter("mlengine_prediction_requests", "Online prediction requests answered, by HTTP "
                                "status code.", [*version, "code"], registry=reg),
            "errors": Counter("mlengine_prediction_errors", "Online prediction requests answered with a 4xx or "
                              "5xx status.", version, registry=reg),
            "latency": Histogram("mlengine_prediction_latency_seconds", "Time from routing a prediction to its "
                                 "answer (server side).", version, buckets=LATENCY_BUCKETS, registry=reg),
            "scale_from_zero": Counter("mlengine_scale_from_zero", "Replicas started because a prediction "
                                       "arrived for a version with none (cold starts).", version, registry=reg),
            "log_dropped": Counter("mlengine_request_log_dropped", "Request-response log records dropped "
                                   "(the logger fell behind or failed).", version, registry=reg),
            "queue_wait": Histogram("mlengine_job_queue_wait_seconds", "Time jobs spent QUEUED before they "
                                    "started preparing.", ["project"], buckets=WAIT_BUCKETS, registry=reg),
        }
        _state.update(made)
    return _state


class _VersionMetrics:
    __slots__ = ("codes", "errors", "family", "key", "latency")

    def __init__(self, key: tuple[str, str, str]) -> None:
        m = _metrics()
        self.key = key
        self.family = m["requests"]
        self.codes: dict[int, Any] = {}
        self.errors = m["errors"].labels(*key)
        self.latency = m["latency"].labels(*key)

    def count(self, status: int, seconds: float) -> None:
        child = self.codes.get(status)
        if child is None:
            child = self.codes[status] = self.family.labels(*self.key, str(status))
        child.inc()
        self.latency.observe(seconds)
        if status >= 400:
            self.errors.inc()


def prediction(project: str, model: str, version: str, status: int, seconds: float) -> None:
    """Count one answered online prediction of a version (the router calls this per request)."""
    key = (project, model, version)
    found = _versions.get(key)
    if found is None:  # setdefault is atomic: two first requests share one entry
        found = _versions.setdefault(key, _VersionMetrics(key))
    found.count(status, seconds)


def scale_from_zero(project: str, model: str, version: str) -> None:
    """A replica was started because a request came for a version that had none."""
    _metrics()["scale_from_zero"].labels(project, model, version).inc()


def request_log_dropped(project: str, model: str, version: str, count: int = 1) -> None:
    """Request-response logging lost ``count`` records of a version (issue 12's logger calls this)."""
    if count > 0:
        _metrics()["log_dropped"].labels(project, model, version).inc(count)


def job_queue_wait(project: str, seconds: float) -> None:
    """A job left QUEUED after ``seconds``."""
    _metrics()["queue_wait"].labels(project).observe(max(0.0, seconds))


def registry(*collectors: Callable[[], Iterable[Any]]) -> Any:
    """A ``prometheus_client`` registry with this module's metrics and, at each scrape, the
    metric families ``collectors`` yield (gauges read from the store and the serving manager);
    a collector that raises is skipped, the rest is still served."""
    from prometheus_client import CollectorRegistry

    class _Process:
        def collect(self) -> Iterable[Any]:
            yield from _metrics()["registry"].collect()
            for collect in collectors:
                try:
                    yield from list(collect())
                except Exception:  # a store that is down must not take /metrics with it
                    import logging

                    logging.getLogger("mlengine.metrics").exception("a metrics collector failed")

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Process())
    return reg


def exposition(reg: Any) -> tuple[bytes, str]:
    """The text exposition of ``reg`` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(reg), CONTENT_TYPE_LATEST
