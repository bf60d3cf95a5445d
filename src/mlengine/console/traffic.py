"""A version's traffic for its console page: the server's own counters (the ones ``/metrics``
exposes) read at one instant. The server keeps counters, not history: the page polls and
draws rates and latency percentiles from the differences since it opened (Prometheus scraping
``/metrics`` is where long history lives)."""

from __future__ import annotations

import time
from typing import Any

REQUESTS = "mlengine_prediction_requests_total"
ERRORS = "mlengine_prediction_errors_total"
BUCKET = "mlengine_prediction_latency_seconds_bucket"
COLD = "mlengine_scale_from_zero_total"


def replicas(serving: Any, project: str, model: str, version: str) -> dict[str, int]:
    """The version's replicas now (ready, starting), as the serving manager's pool counts them."""
    route = (getattr(serving, "routes", None) or {}).get((project, model))
    pool = getattr(route.versions.get(version), "pool", None) if route is not None else None
    return {str(k): int(v) for k, v in pool.counts().items()} if pool is not None else {"ready": 0, "starting": 0}


def snapshot(project: str, model: str, version: str, serving: Any = None) -> dict[str, Any]:
    """Cumulative requests, errors, cold starts and latency buckets (``le`` seconds → count),
    and the replicas now."""
    from mlengine.core import metrics

    want = {"project": project, "model": model, "version": version}
    out: dict[str, Any] = {"time": time.time(), "requests": 0.0, "errors": 0.0, "coldStarts": 0.0, "buckets": {},
                           "replicas": replicas(serving, project, model, version)}
    for family in metrics.registry().collect():
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in want.items()):
                continue
            if sample.name == REQUESTS:
                out["requests"] += sample.value
            elif sample.name == ERRORS:
                out["errors"] += sample.value
            elif sample.name == COLD:
                out["coldStarts"] += sample.value
            elif sample.name == BUCKET:
                out["buckets"][sample.labels["le"]] = sample.value
    return out


def percentile(buckets: dict[str, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of cumulative ``buckets``."""
    ordered = sorted(((float(le), count) for le, count in buckets.items()), key=lambda item: item[0])
    total = ordered[-1][1] if ordered else 0
    if not total:
        return None
    for le, count in ordered:
        if count >= q * total:
            return le * 1000 if le != float("inf") else None
    return None
