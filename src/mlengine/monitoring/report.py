"""A self-contained HTML page of a version's monitoring: per feature, the training and serving
histograms overlaid and the skew distance over time against its threshold (inline SVG, no
script, no external file). :func:`histograms` and :func:`timeline` are the same data as JSON,
for the console."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from mlengine.monitoring import distance, stats


def histograms(baseline: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per feature: bucket labels, training shares and the shares of the runs' merged windows."""
    reference: dict[str, Any] = dict((baseline or {}).get("profile") or {"rows": 0, "features": {}})
    profiles = [r["profile"] for r in runs if r.get("profile")]
    window: dict[str, Any] = stats.merge(profiles) if profiles else {"rows": 0, "features": {}}
    out: dict[str, Any] = {}
    for name, ref in reference["features"].items():
        win = window["features"].get(name)
        if ref["kind"] not in distance.METRICS or win is None or win["kind"] != ref["kind"]:
            continue
        labels, r, w = distance.vectors(ref, win)
        out[name] = {"kind": ref["kind"], "labels": labels,
                     "training": [float(x) / max(1.0, float(r.sum())) for x in r],
                     "serving": [float(x) / max(1.0, float(w.sum())) for x in w], "servingRows": int(w.sum())}
    return out


def timeline(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per feature, oldest first: the window's end, the skew distance and its threshold."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: r["window"]["end"]):
        for finding in (run.get("skew") or {}).get("findings") or []:
            if "distance" in finding:
                out.setdefault(finding["feature"], []).append({
                    "time": run["window"]["endTime"], "distance": finding["distance"],
                    "threshold": finding["threshold"], "alert": bool(finding.get("alert"))})
    return out


def _bars(item: Mapping[str, Any], width: int = 560, height: int = 160) -> str:
    labels = item["labels"]
    top = max([*item["training"], *item["serving"], 1e-9])
    step = width / max(1, len(labels))
    parts = []
    for i, (t, s) in enumerate(zip(item["training"], item["serving"], strict=True)):
        x = i * step
        for share, color, offset in ((t, "#4c78a8", 0.1), (s, "#f58518", 0.5)):
            h = share / top * (height - 20)
            parts.append(f'<rect x="{x + step * offset:.1f}" y="{height - h:.1f}" width="{step * 0.4:.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{html.escape(str(labels[i]))}: '
                         f'{share:.3f}</title></rect>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'


def _line(points: Sequence[Mapping[str, Any]], width: int = 560, height: int = 120) -> str:
    if not points:
        return "<p>No run yet.</p>"
    top = max([*(p["distance"] for p in points), *(p["threshold"] for p in points), 1e-9])
    n = len(points)

    def xy(i: int, v: float) -> str:
        x = 10 + (width - 20) * (i / max(1, n - 1))
        return f"{x:.1f},{height - 10 - (height - 20) * v / top:.1f}"

    dist = " ".join(xy(i, p["distance"]) for i, p in enumerate(points))
    limit = " ".join(xy(i, p["threshold"]) for i, p in enumerate(points))
    dots = "".join(
        f'<circle cx="{xy(i, p["distance"]).split(",")[0]}" cy="{xy(i, p["distance"]).split(",")[1]}" r="3" '
        f'fill="{"#d62728" if p["alert"] else "#4c78a8"}"><title>{html.escape(p["time"])}: '
        f'{p["distance"]:.4f} (threshold {p["threshold"]:.4f})</title></circle>' for i, p in enumerate(points))
    return (f'<svg width="{width}" height="{height}" role="img"><polyline points="{limit}" fill="none" '
            f'stroke="#999" stroke-dasharray="4 3"/><polyline points="{dist}" fill="none" stroke="#4c78a8"/>'
            f'{dots}</svg>')


def render_html(title: str, baseline: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> str:
    bars = histograms(baseline, runs)
    lines = timeline(runs)
    latest = max(runs, key=lambda r: r["window"]["end"]) if runs else None
    findings = {f["feature"]: f for f in ((latest or {}).get("skew") or {}).get("findings") or []}
    sections = []
    names = sorted(set(bars) | set(lines) | set(findings))
    for name in names:
        finding = findings.get(name, {})
        anomalies = "".join(f"<li>{html.escape(a['type'])}: {html.escape(a.get('detail', ''))}</li>"
                            for a in finding.get("anomalies", []))
        figure = _bars(bars[name]) if name in bars else "<p>No histogram for this feature.</p>"
        metric = (f"{html.escape(str(finding.get('metric')))} {finding['distance']:.4f} (threshold "
                  f"{finding['threshold']:.4f}, {finding['sampleSize']} rows)" if "distance" in finding else "")
        alerted = sum(1 for point in lines.get(name, []) if point["alert"])
        flag = f' <strong class="alert">ALERT in {alerted} of {len(lines[name])} runs</strong>' if alerted else ""
        sections.append(f"<section><h2>{html.escape(name)}{flag}</h2><p>{metric}</p>"
                        f"{'<ul>' + anomalies + '</ul>' if anomalies else ''}{figure}"
                        f"<h3>Skew distance over time</h3>{_line(lines.get(name, []))}</section>")
    source = html.escape(str(((baseline or {}).get("source") or {}).get("uris", "")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}} section{{border-top:1px solid #ddd;padding:.5em 0}}
.alert{{color:#d62728}} .key span{{display:inline-block;width:1em;height:1em;margin:0 .3em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Training data: {source or "none"}; runs: {len(runs)}.</p>
<p class="key"><span style="background:#4c78a8"></span>training <span style="background:#f58518"></span>serving
(all runs shown merged); dashed: threshold.</p>
{"".join(sections) or "<p>Nothing to show yet.</p>"}
</body></html>
"""
