"""Distances between two profiles of a feature, chance levels, and the findings of a window.

- numeric features: Jensen-Shannon divergence (base 2, so 0..1) between the bucket shares of
  the two histograms (same edges: the baseline's);
- categorical features: L-infinity distance, the largest difference of a category's share
  (values beyond a reference's kept categories count as one ``other`` category).

Both are Vertex's metrics. The default threshold is not Vertex's fixed 0.3: a feature alerts
when its distance is well beyond chance, ``max(margin * p99, floor)`` where ``p99`` is the
99th percentile of the distance between the reference and ``bootstrap`` same-size samples
drawn from the reference's own distribution (a parametric bootstrap of its histogram, so per
feature and per window size), and ``floor`` is the effect size below which a difference is
trivial however many rows show it. A fixed threshold per feature can be set instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

BOOTSTRAP = 200
MARGIN = 1.5
#: Effect-size floors: a JS divergence of 0.05 is a shift you can see on the histogram (three
#: times the trip miles of Chicago taxis gives 0.09-0.12; last rows against first rows 0.027).
FLOORS = {"numeric": 0.05, "categorical": 0.1}
METRICS = {"numeric": "jensen_shannon", "categorical": "l_infinity"}
MIN_ROWS = 100
#: A missing rate this much higher than the reference's is an anomaly (besides chance).
MISSING_JUMP = 0.1
#: Unseen categories are an anomaly once they hold this share of the window, and well beyond the
#: share of unseen values a sample of the reference itself shows (Good-Turing: the share of values
#: seen once; a long tail of rare taxi companies brings new names in every window).
NEW_CATEGORY_SHARE = 0.01


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2) of share vectors along the last axis."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1) / np.where(m > 0, m, 1)), 0.0)
        b = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(m > 0, m, 1)), 0.0)
    return np.clip((a.sum(axis=-1) + b.sum(axis=-1)) / 2, 0.0, 1.0)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts, dtype=float), where=total > 0)


def vectors(ref: Mapping[str, Any], window: Mapping[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Aligned counts of the two profiles of one feature: (labels, reference, window)."""
    if ref["kind"] == "numeric":
        edges = ref["histogram"]["edges"]
        labels = ["under", *[f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:], strict=False)], "over"]
        r = np.asarray(ref["histogram"]["counts"], dtype=float)
        w = np.asarray(window["histogram"]["counts"], dtype=float)
        return labels, r, w
    known = list(ref["counts"])
    r_counts = [ref["counts"][k] for k in known]
    w_counts = [window.get("counts", {}).get(k, 0) for k in known]
    w_other = window.get("count", 0) - sum(w_counts)
    labels = [*known, "(other)"]
    return labels, np.asarray([*r_counts, ref.get("other", 0)], float), np.asarray([*w_counts, w_other], float)


def distance(kind: str, ref_counts: np.ndarray, window_counts: np.ndarray) -> float:
    p, q = _shares(ref_counts), _shares(window_counts)
    if kind == "numeric":
        return float(_js(p, q))
    return float(np.abs(p - q).max()) if p.size else 0.0


def chance_level(kind: str, ref_counts: np.ndarray, n: int, *, samples: int = BOOTSTRAP,
                 seed: int = 0) -> float:
    """The 99th percentile of the distance between the reference and ``n``-row samples of it."""
    p = _shares(ref_counts)
    if n <= 0 or not p.sum():
        return 1.0
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, p, size=samples).astype(float)
    q = _shares(drawn)
    values = _js(np.broadcast_to(p, q.shape), q) if kind == "numeric" else np.abs(q - p).max(axis=-1)
    return float(np.quantile(values, 0.99))


def threshold(kind: str, ref_counts: np.ndarray, n: int, config: Mapping[str, Any], feature: str) -> dict[str, Any]:
    """The threshold a feature's distance is judged by, and how it was chosen."""
    fixed = (config.get("thresholds") or {}).get(feature, config.get("defaultThreshold"))
    if fixed is not None:
        return {"value": float(fixed), "method": "fixed"}
    chance = chance_level(kind, ref_counts, n)
    floor = float((config.get("floors") or {}).get(kind, FLOORS[kind]))
    return {"value": max(MARGIN * chance, floor), "method": "bootstrap", "chance": chance, "floor": floor}


def new_category_limit(ref: Mapping[str, Any], n: int) -> float:
    """The share of never-seen values a window of ``n`` rows of the reference's own distribution
    stays under (Good-Turing estimate, twice over, plus three standard errors)."""
    singletons = sum(1 for c in ref["counts"].values() if c == 1)
    expected = singletons / ref["count"] if ref["count"] else 0.0
    return max(NEW_CATEGORY_SHARE, 2 * expected + 3 * float(np.sqrt(expected * (1 - expected) / max(1, n))))


def compare(reference: Mapping[str, Any], window: Mapping[str, Any], config: Mapping[str, Any],
            features: list[str] | None = None) -> dict[str, Any]:
    """Findings of ``window`` against ``reference`` (two profiles): every feature's distance,
    threshold and sample size, and anomalies. Alerts only when the window has enough rows."""
    min_rows = int(config.get("minRows", MIN_ROWS))
    rows = int(window.get("rows", 0))
    enough = rows >= min_rows
    ref_features, win_features = reference.get("features", {}), window.get("features", {})
    names = features if features is not None else sorted(ref_features)
    findings: list[dict[str, Any]] = []
    for name in names:
        ref, win = ref_features.get(name), win_features.get(name)
        if ref is None:
            continue
        if win is None or (win["count"] == 0 and rows > 0 and win["missing"] == 0):
            findings.append({"feature": name, "kind": ref["kind"], "sampleSize": 0, "anomalies": [
                {"type": "MISSING_FEATURE", "detail": f"{name} is in the reference but in no instance"}],
                "alert": enough})
            continue
        findings.append(_finding(name, ref, win, config, enough))
    for name in sorted(set(win_features) - set(ref_features)):
        if features is not None and name not in features and name in (config.get("ignore") or ()):
            continue
        findings.append({"feature": name, "kind": win_features[name]["kind"], "sampleSize": win_features[name]["count"],
                         "anomalies": [{"type": "NEW_FEATURE",
                                        "detail": f"{name} is sent in instances but not in the reference"}],
                         "alert": enough})
    result: dict[str, Any] = {"rows": rows, "findings": findings,
                              "alerts": [f["feature"] for f in findings if f["alert"]]}
    if not enough:
        result["note"] = (f"the window has {rows} rows, fewer than minRows {min_rows}: too few to judge, "
                          "so nothing alerts")
    return result


def _finding(name: str, ref: Mapping[str, Any], win: Mapping[str, Any], config: Mapping[str, Any],
             enough: bool) -> dict[str, Any]:
    kind = ref["kind"]
    n = int(win["count"])
    finding: dict[str, Any] = {"feature": name, "kind": kind, "sampleSize": n, "anomalies": []}
    anomalies = finding["anomalies"]
    total_ref = ref["count"] + ref["missing"]
    total_win = n + win["missing"]
    ref_rate = ref["missing"] / total_ref if total_ref else 0.0
    win_rate = win["missing"] / total_win if total_win else 0.0
    finding["missingRate"] = {"reference": ref_rate, "window": win_rate}
    if total_win and win_rate - ref_rate > MISSING_JUMP + 3 * np.sqrt(max(ref_rate * (1 - ref_rate), 1e-4) / total_win):
        anomalies.append({"type": "MISSING_RATE_JUMP",
                          "detail": f"missing in {win_rate:.1%} of the window, {ref_rate:.1%} in the reference"})
    if win["kind"] != kind:
        anomalies.append({"type": "TYPE_CHANGE", "detail": f"{kind} in the reference, {win['kind']} in the window"})
    elif kind in METRICS and n:
        labels, r, w = vectors(ref, win)
        value = distance(kind, r, w)
        limit = threshold(kind, r, n, config, name)
        finding.update(metric=METRICS[kind], distance=value, threshold=limit["value"], thresholdMethod=limit["method"])
        if "chance" in limit:
            finding["chance"] = limit["chance"]
        finding["exceeded"] = value > limit["value"]
        if kind == "categorical" and ref.get("complete", True):
            unseen = {k: c for k, c in win.get("counts", {}).items() if k not in ref["counts"]}
            share = sum(unseen.values()) / n
            if unseen and share >= new_category_limit(ref, n):
                top = sorted(unseen.items(), key=lambda p: -p[1])[:5]
                anomalies.append({"type": "NEW_CATEGORY", "values": [k for k, _ in top], "share": share,
                                  "detail": f"{len(unseen)} value(s) never seen in the reference "
                                            f"({', '.join(repr(k) for k, _ in top)}) hold {share:.1%} of the window"})
    finding["alert"] = enough and (bool(anomalies) or bool(finding.get("exceeded")))
    return finding
