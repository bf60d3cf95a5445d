"""The analyze pass of the taxifare transform: statistics of the full training data that the
feature engineering needs (the coordinate range that is bucketized into an ``nbuckets`` grid,
the mean and spread of the trip distance), and the same transform applied by hand.

No TensorFlow and no Beam here: :class:`Analyzer` has the shape of a Beam ``CombineFn``
(``create_accumulator``/``add_input``/``merge_accumulators``/``extract_output``), so the
preprocessing pipeline (:mod:`trainer.preprocess`) runs it on any Beam runner and the trainer
runs the very same code over its files when Beam is not installed (:func:`analyze_files`).

An analysis is a small JSON object; its ``fingerprint`` (SHA-256 of its canonical JSON and
:data:`TRANSFORM_VERSION`) names the transform: it is exported with the model
(``assets.extra/transform.json``) and recorded by mlengine on the version.

:func:`cached_analysis` keeps analyses keyed by (fingerprint of the data, ``nbuckets``), so
hyperparameter tuning trials with the same bucket count share one analyze pass.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TRANSFORM_VERSION = "taxifare-transform-1"
CSV_COLUMNS = ("fare_amount", "pickup_datetime", "pickup_longitude", "pickup_latitude",
               "dropoff_longitude", "dropoff_latitude", "passenger_count", "key")
# Rides kept by the cleaning step: a fare, passengers, and both ends inside this box around NYC.
LON_RANGE = (-74.3, -73.7)
LAT_RANGE = (40.5, 41.0)
MIN_FARE = 2.5
KM_PER_DEG_LAT = 111.0
KM_PER_DEG_LON = 84.2
ANALYSIS_FILE = "transform.json"

Row = dict[str, Any]


def parse_line(line: str) -> Row | None:
    """A CSV line as a typed row (None when it is not a ride)."""
    try:
        values = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    if len(values) != len(CSV_COLUMNS):
        return None
    row: Row = dict(zip(CSV_COLUMNS, values, strict=True))
    try:
        for name in CSV_COLUMNS:
            if name not in ("pickup_datetime", "key"):
                row[name] = float(row[name])
    except ValueError:
        return None
    return row


def is_valid(row: Row | None) -> bool:
    """The cleaning rule (the course's, with a tighter box)."""
    if row is None:
        return False
    lon_ok = all(LON_RANGE[0] <= row[k] <= LON_RANGE[1] for k in ("pickup_longitude", "dropoff_longitude"))
    lat_ok = all(LAT_RANGE[0] <= row[k] <= LAT_RANGE[1] for k in ("pickup_latitude", "dropoff_latitude"))
    return lon_ok and lat_ok and row["fare_amount"] >= MIN_FARE and row["passenger_count"] > 0


def to_csv(row: Row) -> str:
    return ",".join(str(row[name]) for name in CSV_COLUMNS)


def distance_km(row: Mapping[str, float]) -> float:
    east = (row["dropoff_longitude"] - row["pickup_longitude"]) * KM_PER_DEG_LON
    north = (row["dropoff_latitude"] - row["pickup_latitude"]) * KM_PER_DEG_LAT
    return math.sqrt(east * east + north * north)


class Analyzer:
    """Min/max of longitudes and latitudes, count, sum and sum of squares of distances."""

    def __init__(self, nbuckets: int) -> None:
        self.nbuckets = int(nbuckets)

    def create_accumulator(self) -> list[float]:
        return [math.inf, -math.inf, math.inf, -math.inf, 0.0, 0.0, 0.0]

    def add_input(self, acc: list[float], row: Row) -> list[float]:
        lons = (row["pickup_longitude"], row["dropoff_longitude"])
        lats = (row["pickup_latitude"], row["dropoff_latitude"])
        d = distance_km(row)
        return [min(acc[0], *lons), max(acc[1], *lons), min(acc[2], *lats), max(acc[3], *lats),
                acc[4] + 1, acc[5] + d, acc[6] + d * d]

    def merge_accumulators(self, accs: Iterable[list[float]]) -> list[float]:
        out = self.create_accumulator()
        for a in accs:
            out = [min(out[0], a[0]), max(out[1], a[1]), min(out[2], a[2]), max(out[3], a[3]),
                   out[4] + a[4], out[5] + a[5], out[6] + a[6]]
        return out

    def extract_output(self, acc: list[float]) -> dict[str, Any]:
        count = acc[4]
        if not count:
            raise ValueError("the analyze pass saw no valid rows")
        mean = acc[5] / count
        std = math.sqrt(max(acc[6] / count - mean * mean, 0.0)) or 1.0
        analysis = {"nbuckets": self.nbuckets, "rows": int(count),
                    "lon_min": round(acc[0], 6), "lon_max": round(acc[1], 6),
                    "lat_min": round(acc[2], 6), "lat_max": round(acc[3], 6),
                    "distance_mean": round(mean, 6), "distance_std": round(std, 6)}
        return {**analysis, "fingerprint": fingerprint(analysis)}


def fingerprint(analysis: Mapping[str, Any]) -> str:
    body = {k: v for k, v in analysis.items() if k != "fingerprint"}
    text = json.dumps({"version": TRANSFORM_VERSION, **body}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def expand(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for entry in paths:
        for pattern in (p.strip() for p in entry.split(",") if p.strip()):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"no data file matches {pattern!r}")
            files.extend(matches)
    return files


def rows_of(files: Sequence[str]) -> Iterator[Row]:
    for name in files:
        with open(name, encoding="utf-8") as handle:
            for line in handle:
                row = parse_line(line.strip())
                if is_valid(row):
                    yield row  # type: ignore[misc]


def analyze_files(files: Sequence[str], nbuckets: int) -> dict[str, Any]:
    """The analyze pass over local files in this process (the pipeline's CombineFn, unparallel)."""
    analyzer = Analyzer(nbuckets)
    acc = analyzer.create_accumulator()
    for row in rows_of(files):
        acc = analyzer.add_input(acc, row)
    return analyzer.extract_output(acc)


def data_fingerprint(files: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def cached_analysis(files: Sequence[str], nbuckets: int, cache_dir: str) -> tuple[dict[str, Any], bool]:
    """The analysis of ``files`` for ``nbuckets``, and whether it came from the cache.

    One analyze pass per (data, nbuckets): concurrent trials wait on a file lock for the one
    that computes it."""
    key = f"{data_fingerprint(files)[:16]}-{int(nbuckets)}"
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.json"
    with open(directory / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return json.loads(path.read_text()), True
        analysis = analyze_files(files, nbuckets)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(analysis, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return analysis, False


def load_analysis(transform_dir: str) -> dict[str, Any]:
    return json.loads((Path(transform_dir) / ANALYSIS_FILE).read_text())


# --- the transform applied by hand (numpy), for checking the exported graph ----------------


def transform_by_hand(instances: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The model's inputs for raw instances, computed with numpy in float32 exactly as
    ``trainer.model.transform`` computes them in the graph."""
    import datetime as dt

    import numpy as np

    f32 = np.float32

    def col(name: str) -> Any:
        return np.array([inst[name] for inst in instances], dtype=f32)

    plon, plat, dlon, dlat = (col(n) for n in ("pickup_longitude", "pickup_latitude", "dropoff_longitude",
                                               "dropoff_latitude"))
    passengers = col("passenger_count")
    lon_min, lon_max = f32(analysis["lon_min"]), f32(analysis["lon_max"])
    lat_min, lat_max = f32(analysis["lat_min"]), f32(analysis["lat_max"])
    n = int(analysis["nbuckets"])
    east = (dlon - plon) * f32(KM_PER_DEG_LON)
    north = (dlat - plat) * f32(KM_PER_DEG_LAT)
    dist = np.sqrt(east * east + north * north)

    def scale(v: Any, lo: Any, hi: Any) -> Any:
        return (v - lo) / (hi - lo)

    def bucket(v: Any, lo: Any, hi: Any) -> Any:
        return np.clip(np.floor(scale(v, lo, hi) * f32(n)).astype(np.int32), 0, n - 1)

    def cell(lon: Any, lat: Any) -> Any:
        return bucket(lat, lat_min, lat_max) * n + bucket(lon, lon_min, lon_max)

    numeric = np.stack([scale(plon, lon_min, lon_max), scale(plat, lat_min, lat_max),
                        scale(dlon, lon_min, lon_max), scale(dlat, lat_min, lat_max),
                        east / f32(10.0), north / f32(10.0),
                        (dist - f32(analysis["distance_mean"])) / f32(analysis["distance_std"]),
                        (passengers - f32(1.0)) / f32(5.0)], axis=-1).astype(f32)
    stamps = [dt.datetime.strptime(inst["pickup_datetime"][:19], "%Y-%m-%d %H:%M:%S") for inst in instances]
    pickup, dropoff = cell(plon, plat), cell(dlon, dlat)
    return {
        "numeric": numeric,
        "pickup_cell": pickup,
        "dropoff_cell": dropoff,
        "trip_cross": (pickup * n * n + dropoff) % cross_bins(n),
        "hourofday": np.array([s.hour for s in stamps], dtype=np.int32),
        "dayofweek": np.array([(s.weekday() + 1) % 7 for s in stamps], dtype=np.int32),  # 0 = Sunday
    }


def cross_bins(nbuckets: int) -> int:
    """Ids of the pickup-cell x dropoff-cell feature cross (folded above 10,000)."""
    return min(nbuckets ** 4, 10_000)
