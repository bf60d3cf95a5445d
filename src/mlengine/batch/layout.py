"""The output directory of a batch prediction job, as AI Platform writes it, and the records
that make the job resumable.

::

    OUTPUT/prediction.results-0000N-of-0000M   shard N's results: one line per input instance,
                                               in input order ({"prediction": ...} or the
                                               model's named outputs; "key" when there is one;
                                               {"error": ...} for an instance that failed)
    OUTPUT/prediction.errors_stats-00000-of-00001  per error message: {"error", "count", "example"}
    OUTPUT/.mle-batch/plan.json                the shards (written once, before any worker runs)
    OUTPUT/.mle-batch/done/shard-0000N.json    shard N is complete: its counts and error stats
    OUTPUT/.mle-batch/progress/<worker>.json   the shard a worker is on, and how far it got
    OUTPUT/.mle-batch/tmp/                     results being written

A shard's results are written under ``tmp/`` and renamed into place, then its ``done``
record is written (atomically, last): a shard without a record is done again, and its
renamed results file replaced, so a killed worker never leaves a result doubled or lost and
nothing half-written ever has a final name. ``.mle-batch`` is removed once the job has
finalized (:func:`finalize`). CSV and PARQUET results carry a ``.csv``/``.parquet`` suffix.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlengine.prediction import jsonio

STATE_DIR = ".mle-batch"
ERRORS_FILE = "prediction.errors_stats-00000-of-00001"
SUFFIXES = {"JSON": "", "CSV": ".csv", "PARQUET": ".parquet"}


def results_name(index: int, total: int, output_format: str = "JSON") -> str:
    return f"prediction.results-{index:05d}-of-{total:05d}{SUFFIXES[output_format]}"


@dataclass
class Counts:
    predictions: int = 0
    errors: int = 0
    #: message -> [count, example instance]
    stats: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.predictions += other.predictions
        self.errors += other.errors
        for message, (count, example) in other.stats.items():
            if message in self.stats:
                self.stats[message][0] += count
            else:
                self.stats[message] = [count, example]

    def to_json(self) -> dict[str, Any]:
        return {"predictions": self.predictions, "errors": self.errors, "stats": self.stats}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        return cls(int(data.get("predictions", 0)), int(data.get("errors", 0)), dict(data.get("stats") or {}))


class Output:
    """The output directory at ``uri`` (any fsspec URI)."""

    def __init__(self, uri: str) -> None:
        from mlengine.storage import uris

        self.uri = uri
        self.fs, self.root = uris.filesystem(uri)
        self.root = self.root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def is_empty(self) -> bool:
        """Whether nothing is there yet (a missing directory is empty)."""
        try:
            if not self.fs.exists(self.root):
                return True
            if not self.fs.isdir(self.root):
                return False
            return not self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return True

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write a small file under a temporary name, then rename it."""
        target = self.path(relative)
        tmp = self.path(STATE_DIR, "tmp", f"{uuid.uuid4().hex}.part")
        self.fs.makedirs(self.path(STATE_DIR, "tmp"), exist_ok=True)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self._rename(tmp, target)

    def _rename(self, source: str, target: str) -> None:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if protocol in ("file", "local"):
            os.replace(source, target)  # atomic on one filesystem
        else:
            self.fs.mv(source, target)

    def read_json(self, relative: str) -> Any:
        try:
            with self.fs.open(self.path(relative), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    # The plan -------------------------------------------------------------------------------
    def plan(self) -> dict[str, Any] | None:
        return self.read_json(f"{STATE_DIR}/plan.json")

    def save_plan(self, plan: dict[str, Any]) -> None:
        self.write_atomic(f"{STATE_DIR}/plan.json", json.dumps(plan).encode())

    # Shards ---------------------------------------------------------------------------------
    def done(self) -> dict[int, Counts]:
        """The completed shards and their counts."""
        directory = self.path(STATE_DIR, "done")
        try:
            names = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return {}
        out: dict[int, Counts] = {}
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if not (base.startswith("shard-") and base.endswith(".json")):
                continue
            data = self.read_json(f"{STATE_DIR}/done/{base}")
            if data is not None:
                out[int(base[6:-5])] = Counts.from_json(data)
        return out

    def commit_shard(self, index: int, total: int, output_format: str, results: bytes, counts: Counts) -> None:
        """Results into place, then the record that says the shard is done (see the module doc)."""
        self.write_atomic(results_name(index, total, output_format), results)
        self.write_atomic(f"{STATE_DIR}/done/shard-{index:05d}.json", json.dumps(counts.to_json()).encode())

    def progress(self) -> dict[str, Any]:
        """Per worker: ``{"shard", "predictions", "errors"}`` of the shard it is on."""
        directory = self.path(STATE_DIR, "progress")
        out: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError):
            for name in self.fs.ls(directory, detail=False):
                base = name.rsplit("/", 1)[-1]
                if base.endswith(".json"):
                    data = self.read_json(f"{STATE_DIR}/progress/{base}")
                    if data is not None:
                        out[base[:-5]] = data
        return out

    def report(self, worker: str, data: dict[str, Any]) -> None:
        self.write_atomic(f"{STATE_DIR}/progress/{worker}.json", json.dumps(data).encode())

    # The end --------------------------------------------------------------------------------
    def finalize(self, counts: Counts) -> None:
        """The error stats file, then the state directory goes."""
        lines = [jsonio.dumps({"error": message, "count": count, "example": example})
                 for message, (count, example) in sorted(counts.stats.items(), key=lambda kv: -kv[1][0])]
        self.write_atomic(ERRORS_FILE, b"".join(line + b"\n" for line in lines))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(STATE_DIR), recursive=True)


def encode_results(predictions: list[Any], errors: dict[int, str], keys: list[Any] | None, output_format: str,
                   key_name: str = "key") -> bytes:
    """One shard's results (see the module doc) in ``output_format``."""
    records = _records(predictions, errors, keys, key_name)
    if output_format == "JSON":
        return _json_lines(predictions, errors, keys, records)
    import io

    import pyarrow as pa

    table = pa.Table.from_pylist([_flat(r) for r in records])
    sink = io.BytesIO()
    if output_format == "CSV":
        import pyarrow.csv as pc

        pc.write_csv(table, sink)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, sink)
    return sink.getvalue()


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """Columns for CSV/Parquet: nested values as JSON text."""
    return {k: (jsonio.dumps(v).decode() if isinstance(v, (list, dict)) else v) for k, v in record.items()}


def _records(predictions: list[Any], errors: dict[int, str], keys: list[Any] | None, key_name: str) -> Iterable[Any]:
    for i, value in enumerate(predictions):
        record: dict[str, Any]
        if i in errors:
            record = {"error": errors[i]}
        elif isinstance(value, dict):
            record = dict(value)
        else:
            record = {"prediction": value}
        if keys is not None:
            record[key_name] = keys[i]
        yield record


def _json_lines(predictions: list[Any], errors: dict[int, str], keys: list[Any] | None,
                records: Iterable[Any]) -> bytes:
    import numpy as np

    first = predictions[0] if predictions else None
    if not errors and keys is None and isinstance(first, (float, int, np.number)):
        try:  # scalars: one orjson call for every value
            values = jsonio.dumps(np.asarray(predictions))
            if values.startswith(b"[") and b"[" not in values[1:]:
                parts = values[1:-1].split(b",")
                if len(parts) == len(predictions):
                    return b"".join(b'{"prediction":' + p + b"}\n" for p in parts)
        except (TypeError, ValueError):
            pass
    dumps = jsonio.dumps
    return b"".join(dumps(r) + b"\n" for r in records)
