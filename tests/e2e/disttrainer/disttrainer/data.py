"""Taxi rides as a small numeric problem: fare from distance, passengers and hour."""

from __future__ import annotations

import csv
import math


def load(path: str, limit: int = 0) -> tuple[list[list[float]], list[float]]:
    """Standardized features ``[distance_km, passengers, hour]`` and fares."""
    rows, fares = [], []
    with open(path, newline="") as f:
        for record in csv.reader(f):
            fare, when, plon, plat, dlon, dlat, passengers = record[:7]
            dx = (float(dlon) - float(plon)) * 85.0
            dy = (float(dlat) - float(plat)) * 111.0
            rows.append([math.hypot(dx, dy), float(passengers), float(when[11:13] or 0)])
            fares.append(float(fare))
            if limit and len(rows) >= limit:
                break
    columns = list(zip(*rows, strict=True))
    means = [sum(c) / len(c) for c in columns]
    stds = [max(1e-6, math.sqrt(sum((v - m) ** 2 for v in c) / len(c))) for c, m in zip(columns, means, strict=True)]
    scaled = [[(v - m) / s for v, m, s in zip(r, means, stds, strict=True)] for r in rows]
    return scaled, fares
