"""Feature statistics: one pass over a columnar table, mergeable, JSON-able.

A *profile* is ``{"rows": N, "features": {name: feature}}``; a feature is one of

- ``numeric``: ``count`` (present values), ``missing`` (null or NaN), ``min``, ``max``, ``sum``,
  ``sumsq`` (so that merged profiles keep exact ``mean`` and ``std``), ``quantiles`` and a
  ``histogram`` ``{"edges": [...], "counts": [under, b1, ..., over]}``: ``len(edges) - 1``
  buckets between the edges plus an *under* bucket (below the first edge) and an *over* bucket
  (above the last). The edges come from the reference's quantiles (the training data's, so a
  long-tailed column such as trip miles gets fine buckets where its rows are) or, with
  ``binning="equal_width"``, from equal steps between its min and max (Vertex's choice);
- ``categorical``: ``count``, ``missing``, ``distinct`` and ``counts`` (value → rows; the
  ``max_categories`` most frequent when there are more, then ``complete`` is false and
  ``other`` holds the rest);
- ``text``: strings that are nearly all distinct (timestamps, ids): only ``count``, ``missing``
  and ``distinct``; no distance is meaningful for them.

A window profiled against a reference (``reference=``) reuses the reference's kinds and edges,
so windows and the baseline compare bucket by bucket and :func:`merge` adds them (a day is the
sum of its hours). The engine is Arrow (``pyarrow.compute``) plus NumPy for bucketing; DuckDB's
``SUMMARIZE`` is about as fast for the moments but computes neither histograms on given edges nor
full category counts (bench/monitoring.py times both).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

BUCKETS = 20
MAX_CATEGORIES = 1000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: A string column whose distinct values exceed this share of its rows is text, not a category;
#: so is one of timestamps (serving times are always new: no category, no skew).
TEXT_DISTINCT_SHARE = 0.2
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}"
TEXT_MIN_ROWS = 50

Profile = dict[str, Any]
Feature = dict[str, Any]


def profile_table(table: Any, *, reference: Profile | None = None, buckets: int = BUCKETS,
                  binning: str = "quantile", max_categories: int = MAX_CATEGORIES) -> Profile:
    """The profile of a ``pyarrow.Table`` (see the module doc)."""
    features: dict[str, Feature] = {}
    ref_features = (reference or {}).get("features", {})
    for name in table.column_names:
        column = table.column(name)
        ref = ref_features.get(name)
        features[name] = profile_column(column, ref, buckets=buckets, binning=binning,
                                        max_categories=max_categories)
    return {"rows": table.num_rows, "features": features}


def _is_numeric(arrow_type: Any) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_integer(arrow_type) or pt.is_floating(arrow_type) or pt.is_decimal(arrow_type)
                or pt.is_boolean(arrow_type) or pt.is_null(arrow_type))


def profile_column(column: Any, ref: Feature | None = None, *, buckets: int = BUCKETS, binning: str = "quantile",
                   max_categories: int = MAX_CATEGORIES) -> Feature:
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    numeric = _is_numeric(column.type)
    if ref is not None and ref["kind"] == "numeric" and not numeric:
        cast = _try_numeric(column)
        if cast is not None:
            column, numeric = cast, True
    if numeric and (ref is None or ref["kind"] == "numeric"):
        return _numeric(column, ref, buckets, binning)
    if numeric:
        column = column.cast(pa.string())
    return _categorical(column, ref, max_categories)


def _try_numeric(column: Any) -> Any | None:
    """Strings that all parse as numbers (a client sending "1.5"), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(column.cast(pa.string()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _numeric(column: Any, ref: Feature | None, buckets: int, binning: str) -> Feature:
    import numpy as np
    import pyarrow as pa

    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    present = values[~np.isnan(values)]
    count = int(present.size)
    feature: Feature = {"kind": "numeric", "count": count, "missing": int(values.size - count)}
    if count:
        total = float(present.sum())
        feature.update(min=float(present.min()), max=float(present.max()), sum=total,
                       sumsq=float(np.dot(present, present)))
        qs = np.quantile(present, QUANTILES) if count <= 200_000 else _sampled_quantiles(present)
        feature["quantiles"] = {str(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)}
    _moments(feature)
    edges = list(ref["histogram"]["edges"]) if ref is not None else _edges(present, buckets, binning)
    feature["histogram"] = {"edges": edges, "counts": bucket_counts(present, edges), "binning":
                            ref["histogram"].get("binning", binning) if ref is not None else binning}
    return feature


def _sampled_quantiles(present: Any) -> Any:
    import numpy as np

    # a strided sample keeps quantiles within a fraction of a percent at a fraction of the cost
    step = max(1, present.size // 200_000)
    return np.quantile(present[::step], QUANTILES)


def _edges(present: Any, buckets: int, binning: str) -> list[float]:
    import numpy as np

    if not present.size:
        return []
    if binning == "equal_width":
        lo, hi = float(present.min()), float(present.max())
        edges = np.linspace(lo, hi, buckets + 1) if hi > lo else np.array([lo])
    else:
        sample = present if present.size <= 1_000_000 else present[:: present.size // 1_000_000 + 1]
        edges = np.unique(np.quantile(sample, np.linspace(0, 1, buckets + 1)))
        edges[0], edges[-1] = min(edges[0], present.min()), max(edges[-1], present.max())
    return [float(e) for e in edges]


def bucket_counts(present: Any, edges: list[float]) -> list[int]:
    """``[under, b1, ..., over]`` of the values against ``edges`` (the last edge is inside the
    last bucket, so the reference's maximum is not *over*)."""
    import numpy as np

    if not edges:
        return [0, int(present.size)]
    index = np.searchsorted(np.asarray(edges), present, side="right")
    index[present == edges[-1]] = len(edges) - 1
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def _categorical(column: Any, ref: Feature | None, max_categories: int) -> Feature:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    missing = int(column.null_count)
    count = len(column) - missing
    counted = pc.value_counts(column.drop_null())
    values = counted.field("values").to_pylist()
    freqs = counted.field("counts").to_pylist()
    distinct = len(values)
    is_text = (ref["kind"] == "text") if ref is not None else (
        count >= TEXT_MIN_ROWS and distinct > TEXT_DISTINCT_SHARE * count) or _timestamps(values)
    if is_text:
        return {"kind": "text", "count": count, "missing": missing, "distinct": distinct}
    pairs = sorted(zip(values, freqs, strict=True), key=lambda p: (-p[1], p[0]))
    kept = pairs[:max_categories]
    other = sum(f for _, f in pairs[max_categories:])
    return {"kind": "categorical", "count": count, "missing": missing, "distinct": distinct,
            "counts": dict(kept), "other": other, "complete": other == 0}


def _timestamps(values: list[Any]) -> bool:
    import re

    sample = [v for v in values[:50] if isinstance(v, str)]
    return bool(sample) and all(re.match(_TIMESTAMP, v) for v in sample)


def _moments(feature: Feature) -> None:
    count = feature["count"]
    if not count:
        feature.pop("mean", None)
        feature.pop("std", None)
        return
    mean = feature["sum"] / count
    variance = max(0.0, feature["sumsq"] / count - mean * mean)
    feature["mean"], feature["std"] = mean, math.sqrt(variance)


# Merging --------------------------------------------------------------------------------------
def merge(profiles: Iterable[Profile], max_categories: int = MAX_CATEGORIES) -> Profile:
    """One profile of several windows profiled against the same reference."""
    rows = 0
    features: dict[str, Feature] = {}
    for profile in profiles:
        rows += profile["rows"]
        for name, feature in profile["features"].items():
            features[name] = _merge_feature(features[name], feature, max_categories) if name in features \
                else _copy(feature)
    return {"rows": rows, "features": features}


def _copy(feature: Feature) -> Feature:
    import copy

    return copy.deepcopy(feature)


def _merge_feature(a: Feature, b: Feature, max_categories: int) -> Feature:
    if a["kind"] != b["kind"]:
        return a if a["count"] >= b["count"] else _copy(b)
    out: Feature = {"kind": a["kind"], "count": a["count"] + b["count"], "missing": a["missing"] + b["missing"]}
    if a["kind"] == "numeric":
        present = [f for f in (a, b) if f["count"]]
        if present:
            out.update(min=min(f["min"] for f in present), max=max(f["max"] for f in present),
                       sum=sum(f["sum"] for f in present), sumsq=sum(f["sumsq"] for f in present))
        _moments(out)
        ha, hb = a["histogram"], b["histogram"]
        if ha["edges"] != hb["edges"]:
            raise ValueError("profiles with different bucket edges cannot be merged")
        counts = [x + y for x, y in zip(ha["counts"], hb["counts"], strict=True)]
        out["histogram"] = {**ha, "counts": counts}
        out["quantiles"] = histogram_quantiles(ha["edges"], counts, out.get("min"), out.get("max"))
    elif a["kind"] == "categorical":
        merged: dict[str, int] = dict(a["counts"])
        for value, n in b["counts"].items():
            merged[value] = merged.get(value, 0) + n
        pairs = sorted(merged.items(), key=lambda p: (-p[1], p[0]))
        other = a["other"] + b["other"] + sum(n for _, n in pairs[max_categories:])
        out.update(distinct=max(a["distinct"], b["distinct"], len(pairs)), counts=dict(pairs[:max_categories]),
                   other=other, complete=other == 0)
    else:
        out["distinct"] = max(a["distinct"], b["distinct"])
    return out


def histogram_quantiles(edges: list[float], counts: list[int], lo: float | None,
                        hi: float | None) -> dict[str, float]:
    """Quantiles estimated from a histogram (linear within a bucket), for merged profiles."""
    total = sum(counts)
    if not total or not edges or lo is None or hi is None:
        return {}
    bounds = [min(lo, edges[0]), *edges, max(hi, edges[-1])]
    out: dict[str, float] = {}
    for q in QUANTILES:
        target, seen = q * total, 0.0
        for i, n in enumerate(counts):
            if n and seen + n >= target:
                left, right = bounds[i], bounds[i + 1]
                out[str(q)] = left + (right - left) * (target - seen) / n
                break
            seen += n
    return out


def summary(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A short view of a profile (no histograms): for describe and listings."""
    features: dict[str, Any] = {}
    for name, f in profile.get("features", {}).items():
        keys = ("kind", "count", "missing", "distinct", "min", "max", "mean", "std")
        view: dict[str, Any] = {k: f[k] for k in keys if k in f}
        if f["kind"] == "categorical":
            view["top"] = list(f["counts"].items())[:5]
        features[name] = view
    return {"rows": profile.get("rows", 0), "features": features}
