"""Splitting a job's inputs into shards (control plane, once per job) and reading one shard
in columnar chunks (worker).

A shard is a contiguous run of instances of one file, described by byte offsets (lines of
JSON/TEXT/CSV files, records of an uncompressed TFRecord file) or by instance positions (rows
of a Parquet file, records of a gzipped TFRecord file, which cannot be sought). The plan is
computed once and stored with the job's output (:mod:`mlengine.batch.layout`), so a resumed
job reads exactly the shards it planned: one result per input instance, none doubled or lost.

Lines: every ``\\n``-terminated line, and a last unterminated one, is an instance (an empty
line is an instance that fails). CSV files have no header and no quoted newlines.
"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlengine.batch.spec import LINE_FORMATS
from mlengine.errors import invalid

#: Instances per shard: enough shards for every worker to get several, none too large.
MIN_SHARD = 1_000
MAX_SHARD = 100_000
SHARDS_PER_WORKER = 8
_READ = 8 << 20


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    #: Byte range for sought formats (``end`` -1: position-based), else instance positions.
    start: int
    end: int
    first: int
    count: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        return cls(**data)


def expand(patterns: list[str], field: str = "predictionInput.inputPaths") -> list[str]:
    """The files ``patterns`` (wildcards allowed, any fsspec URI) match, in order, each once;
    INVALID_ARGUMENT naming the pattern that matches nothing."""
    from mlengine.storage import uris

    found: list[str] = []
    for i, pattern in enumerate(patterns):
        fs, path = uris.filesystem(pattern)
        try:
            matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
            matches = [m for m in matches if fs.isfile(m)]
        except Exception as err:  # a bucket that cannot be listed
            raise invalid(f"{field}[{i}]", f"cannot list {pattern}: {err}") from None
        if not matches:
            raise invalid(f"{field}[{i}]", f"no file matches {pattern}")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for match in matches:
            uri = match if protocol in ("file", "local") else f"{protocol}://{match}"
            if uri not in found:
                found.append(uri)
    return found


def _open(uri: str) -> Any:
    from mlengine.storage import uris

    fs, path = uris.filesystem(uri)
    return fs.open(path, "rb")


def _line_starts(uri: str) -> np.ndarray:
    """Byte offsets of every line's start."""
    parts = []
    size = 0
    with _open(uri) as f:
        while True:
            block = f.read(_READ)
            if not block:
                break
            parts.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + size + 1)
            size += len(block)
    ends = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    starts = np.concatenate([[0], ends]).astype(np.int64)
    return starts[starts < size] if size else starts[:0]


def _record_starts(uri: str) -> tuple[np.ndarray, int]:
    """Byte offsets of every TFRecord record, and the file size."""
    offsets = []
    with _open(uri) as f:
        position = 0
        while True:
            header = f.read(12)
            if not header:
                break
            if len(header) < 12:
                raise invalid("predictionInput.inputPaths", f"{uri} is not a TFRecord file (truncated record)")
            (length,) = struct.unpack("<Q", header[:8])
            offsets.append(position)
            position += 16 + length
            f.seek(position)
    return np.asarray(offsets, np.int64), position


def _gzip_records(uri: str) -> int:
    with _open(uri) as raw, gzip.open(raw) as f:
        count = 0
        for _ in _records(f):
            count += 1
        return count


def _records(f: Any) -> Iterator[bytes]:
    while True:
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError("truncated TFRecord record")
        (length,) = struct.unpack("<Q", header[:8])
        data = f.read(length)
        f.read(4)
        if len(data) < length:
            raise ValueError("truncated TFRecord record")
        yield data


def _parquet_rows(uri: str) -> int:
    import pyarrow.parquet as pq

    with _open(uri) as f:
        return int(pq.ParquetFile(f).metadata.num_rows)


def shard_size(total: int, workers: int) -> int:
    return int(min(MAX_SHARD, max(MIN_SHARD, -(-total // max(1, workers * SHARDS_PER_WORKER)))))


def plan(files: list[str], data_format: str, workers: int) -> list[Shard]:
    """The shards of ``files`` (see the module doc); raises INVALID_ARGUMENT naming a file that
    cannot be read in ``data_format``."""
    positions: list[tuple[str, Any, int]] = []  # (file, offsets or None, size | count)
    for uri in files:
        try:
            if data_format in LINE_FORMATS:
                starts = _line_starts(uri)
                positions.append((uri, starts, -1))
            elif data_format == "TF_RECORD":
                offsets, size = _record_starts(uri)
                positions.append((uri, offsets, size))
            elif data_format == "TF_RECORD_GZIP":
                positions.append((uri, None, _gzip_records(uri)))
            else:
                positions.append((uri, None, _parquet_rows(uri)))
        except (OSError, ValueError, EOFError) as err:
            raise invalid("predictionInput.dataFormat", f"{uri} cannot be read as {data_format}: {err}") from None
    total = sum(len(p[1]) if p[1] is not None else p[2] for p in positions)
    size = shard_size(total, workers)
    shards: list[Shard] = []
    for uri, offsets, extent in positions:
        if offsets is None:
            for first in range(0, extent, size):
                shards.append(Shard(len(shards), uri, 0, -1, first, min(size, extent - first)))
            continue
        file_end = extent if extent >= 0 else None
        for first in range(0, len(offsets), size):
            last = first + size
            start = int(offsets[first])
            end = int(offsets[last]) if last < len(offsets) else (file_end if file_end is not None else -2)
            shards.append(Shard(len(shards), uri, start, end, first, min(size, len(offsets) - first)))
    return shards


# Reading (workers) -------------------------------------------------------------------------
def read_bytes(shard: Shard) -> bytes:
    """The bytes of a byte-range shard (``end`` -2: to the end of the file)."""
    with _open(shard.path) as f:
        f.seek(shard.start)
        return bytes(f.read() if shard.end == -2 else f.read(shard.end - shard.start))


def lines(shard: Shard) -> list[bytes]:
    return split_lines(read_bytes(shard))


def split_lines(data: bytes) -> list[bytes]:
    out = data.split(b"\n")
    if data.endswith(b"\n"):
        out.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in out]


def records(shard: Shard, gzipped: bool) -> list[bytes]:
    if gzipped:
        with _open(shard.path) as raw, gzip.open(raw) as f:
            out = []
            for i, record in enumerate(_records(f)):
                if i >= shard.first + shard.count:
                    break
                if i >= shard.first:
                    out.append(record)
            return out
    return list(_records(io.BytesIO(read_bytes(shard))))


def parquet(shard: Shard) -> Any:
    """The shard's rows of a Parquet file, as a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open(shard.path) as f:
        pf = pq.ParquetFile(f)
        groups: list[int] = []
        seen = skip = 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if seen + rows > shard.first and seen < shard.first + shard.count:
                if not groups:
                    skip = shard.first - seen
                groups.append(g)
            seen += rows
        table = pf.read_row_groups(groups) if groups else pa.table({})
    return table.slice(skip, shard.count)
