"""Models and inputs for the batch prediction tests: taxi rides (generated, with the columns of
samples/taxifare) and a scikit-learn pipeline fitted on a DataFrame of them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ["pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude", "passenger_count"]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "taxifare"


def rides(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` taxi rides with a ``key`` (their position) and the taxifare model's raw features."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({
            "key": i,
            "pickup_datetime": f"2013-0{1 + i % 9}-1{i % 10} 0{i % 10}:15:00 UTC",
            "pickup_longitude": round(float(-74.0 + rng.uniform(-0.05, 0.05)), 6),
            "pickup_latitude": round(float(40.75 + rng.uniform(-0.05, 0.05)), 6),
            "dropoff_longitude": round(float(-73.98 + rng.uniform(-0.05, 0.05)), 6),
            "dropoff_latitude": round(float(40.74 + rng.uniform(-0.05, 0.05)), 6),
            "passenger_count": int(rng.integers(1, 5)),
        })
    return out


def sklearn_model(directory: Path) -> Path:
    """A scikit-learn pipeline fitted on a DataFrame of the sample's taxi rides (model.joblib)."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = ["fare_amount", "pickup_datetime", *FEATURES, "key"]
    with open(SAMPLE / "data" / "taxi-train.csv") as f:
        frame = pd.DataFrame(list(csv.reader(f)), columns=names)
    x = frame[FEATURES].astype(float)
    model = make_pipeline(StandardScaler(), Ridge()).fit(x, frame["fare_amount"].astype(float))
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    return directory


def write_inputs(directory: Path, instances: list[dict[str, Any]], fmt: str, columns: list[str] | None = None,
                 files: int = 1) -> list[Path]:
    """``instances`` in ``files`` files of format ``fmt`` (CSV: ``columns`` in order, no header)."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = [instances[i::files] for i in range(files)] if files > 1 else [instances]
    paths = []
    for n, part in enumerate(parts):
        path = directory / f"part-{n}.{fmt.lower()}"
        if fmt == "JSON":
            path.write_text("".join(json.dumps(r) + "\n" for r in part))
        elif fmt == "CSV":
            path.write_text("".join(",".join(str(r[c]) for c in columns or []) + "\n" for r in part))
        elif fmt == "PARQUET":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(part), path, row_group_size=max(1, len(part) // 3))
        elif fmt == "TF_RECORD":
            write_tfrecord(path, part)
        paths.append(path)
    return paths


def write_tfrecord(path: Path, instances: list[dict[str, Any]]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for r in instances:
            feature = {}
            for name, value in r.items():
                if isinstance(value, str):
                    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
                elif isinstance(value, int):
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                else:
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def read_results(directory: Path) -> list[dict[str, Any]]:
    """Every JSON results line of an output directory, in file order."""
    lines = []
    for path in sorted(directory.glob("prediction.results-*")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines
