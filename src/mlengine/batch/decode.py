"""A shard's bytes as instances, columnar where the format allows.

- JSON/JSONL objects and CSV rows are parsed in one pyarrow call per shard (a Table); JSON
  lists are parsed in one orjson call; when that fails, line by line, and each line that is
  not valid is an instance that fails with the reason (the others go on).
- TEXT: each line is a string instance. PARQUET: the rows (a Table).
- TF_RECORD(_GZIP): each record a serialized ``tf.train.Example``, given as an object of its
  features (one value: a scalar), or, for a model whose signature takes one string (``raw``),
  the record's bytes as ``{"b64": ...}``, AI Platform's convention.
- ``keyField``: taken out of every object instance; its value goes with the prediction.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from mlengine.batch import shards
from mlengine.batch.shards import Shard
from mlengine.prediction import jsonio

#: Column names given to headerless CSV rows (the instance is the row as a list).
CSV_PREFIX = "f"


@dataclass
class Decoded:
    count: int
    #: Every instance as a row of a pyarrow Table (objects), or None.
    table: Any = None
    #: Otherwise every instance as a Python value (None where ``bad`` has its position).
    instances: list[Any] | None = None
    bad: dict[int, str] = field(default_factory=dict)
    keys: list[Any] | None = None
    #: The table's columns are positions (CSV), not names.
    positional: bool = False

    def rows(self) -> list[Any]:
        """Every instance as a Python value (the slow, general path)."""
        if self.instances is not None:
            return self.instances
        rows = self.table.to_pylist()
        if self.positional:
            return [list(row.values()) for row in rows]
        return list(rows)


def _take_keys(decoded: Decoded, key_field: str | None) -> Decoded:
    if not key_field:
        return decoded
    if decoded.table is not None:
        if key_field in decoded.table.column_names:
            decoded.keys = decoded.table.column(key_field).to_pylist()
            decoded.table = decoded.table.drop_columns([key_field])
        else:
            decoded.keys = [None] * decoded.count
        return decoded
    keys: list[Any] = []
    for i, instance in enumerate(decoded.instances or []):
        if isinstance(instance, dict) and key_field in instance:
            keys.append(instance.pop(key_field))
        else:
            keys.append(None)
            if i not in decoded.bad:
                decoded.bad[i] = f"The instance has no key field {key_field!r}."
    decoded.keys = keys
    return decoded


def _json_table(data: bytes) -> Decoded | None:
    """The fast path: one JSON object per line and no blank line, parsed by Arrow straight
    from the shard's bytes (no Python object per line: JSON parsing is most of batch
    prediction's cost). ``None`` sends anything else to :func:`_json_lines`."""
    if data[:1] != b"{" or b"\n\n" in data or b"\n\r\n" in data:
        return None
    rows = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    import pyarrow.json as pj

    try:
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=1 << 22))
    except Exception:  # mixed types, a bad line: line by line
        return None
    return Decoded(rows, table=table) if table.num_rows == rows else None


def _json_lines(items: list[bytes]) -> Decoded:
    first = next((line.lstrip()[:1] for line in items if line.strip()), b"")
    if first == b"{" and all(line.strip() for line in items):
        import pyarrow.json as pj

        try:
            table = pj.read_json(_as_stream(items))
            if table.num_rows == len(items):
                return Decoded(len(items), table=table)
        except Exception:  # mixed types, a bad line: line by line below
            pass
    if all(line.strip() for line in items):
        try:
            values = jsonio.loads(b"[" + b",".join(items) + b"]")
            if isinstance(values, list) and len(values) == len(items):
                return Decoded(len(items), instances=values)
        except jsonio.JSONError:
            pass
    instances: list[Any] = []
    bad: dict[int, str] = {}
    for i, line in enumerate(items):
        if not line.strip():
            bad[i] = "The line is empty."
            instances.append(None)
            continue
        try:
            instances.append(jsonio.loads(line))
        except jsonio.JSONError as err:
            bad[i] = f"The line is not valid JSON: {err}"
            instances.append(None)
    return Decoded(len(items), instances=instances, bad=bad)


def _as_stream(items: list[bytes]) -> Any:
    import io

    return io.BytesIO(b"\n".join(items) + b"\n")


def _csv(items: list[bytes]) -> Decoded:
    import pyarrow.csv as pc

    try:
        table = pc.read_csv(_as_stream(items), read_options=pc.ReadOptions(autogenerate_column_names=True))
        if table.num_rows == len(items):
            names = [f"{CSV_PREFIX}{i}" for i in range(table.num_columns)]
            return Decoded(len(items), table=table.rename_columns(names), positional=True)
    except Exception:  # ragged rows: line by line below
        pass
    import csv

    instances: list[Any] = []
    bad: dict[int, str] = {}
    for i, row in enumerate(csv.reader(line.decode("utf-8", "replace") for line in items)):
        if not row:
            bad[i] = "The line is empty."
            instances.append(None)
            continue
        instances.append([_number(v) for v in row])
    return Decoded(len(items), instances=instances, bad=bad)


def _number(value: str) -> Any:
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            continue
    return value


def _example(record: bytes) -> Any:
    from tensorflow.core.example import example_pb2  # lazily: TensorFlow's protobufs

    example = example_pb2.Example()
    example.ParseFromString(record)
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            out[name] = None
            continue
        values = list(getattr(feature, kind).value)
        if kind == "bytes_list":
            values = [v.decode("utf-8") if _utf8(v) else {"b64": base64.b64encode(v).decode()} for v in values]
        out[name] = values[0] if len(values) == 1 else values
    return out


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def decode(shard: Shard, data_format: str, key_field: str | None = None, raw_records: bool = False) -> Decoded:
    if data_format in ("JSON", "JSONL"):
        data = shards.read_bytes(shard)
        decoded = _json_table(data) or _json_lines(shards.split_lines(data))
    elif data_format == "CSV":
        decoded = _csv(shards.lines(shard))
    elif data_format == "TEXT":
        items = shards.lines(shard)
        decoded = Decoded(len(items), instances=[line.decode("utf-8", "replace") for line in items])
    elif data_format == "PARQUET":
        table = shards.parquet(shard)
        decoded = Decoded(table.num_rows, table=table)
    else:
        records = shards.records(shard, data_format == "TF_RECORD_GZIP")
        instances: list[Any] = []
        bad: dict[int, str] = {}
        for i, record in enumerate(records):
            if raw_records:
                instances.append({"b64": base64.b64encode(record).decode()})
                continue
            try:
                instances.append(_example(record))
            except Exception as err:  # not an Example: protobuf's DecodeError
                bad[i] = f"The record is not a tf.train.Example: {err}"
                instances.append(None)
        decoded = Decoded(len(records), instances=instances, bad=bad)
    return _take_keys(decoded, key_field)
