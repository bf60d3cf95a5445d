"""Request-response logs: a bounded writer off the predict path, Parquet files by day, DuckDB.

Contract
--------
- :meth:`RequestLogWriter.record` is called on the event loop for every answered predict call
  of a logged version; it never blocks and never raises: it draws the sample (``sampling``, a
  fraction from 0 to 1) and appends the raw bytes to a bounded in-memory queue. When the queue
  is full the record is dropped and counted (:attr:`RequestLogWriter.dropped`, per version).
- One background thread turns queued records into Parquet files, one per version and day per
  flush (every ``flush_seconds``, or sooner once ``batch_rows`` are waiting), under
  ``<version dir>/monitoring/requests/date=YYYY-MM-DD/`` (hive partitioning, so DuckDB prunes
  days). Each file is written to a temporary name and renamed: readers never see half a file.
- The columns follow AI Platform's request-response BigQuery table: ``model``,
  ``model_version``, ``time``, ``raw_data`` (the request body), ``raw_prediction`` (the
  response body), ``groundtruth`` (null, for the user), plus ``request_id`` and ``status``.
- :func:`query` runs the user's SQL on an in-memory DuckDB whose only table is the logs (named
  ``logs`` and, when set, by ``bigqueryTableName``'s last part), with file access, extensions
  and configuration changes disabled, one thread, a memory cap and a timeout.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlengine.errors import Code, MLEngineError, invalid

log = logging.getLogger("mlengine.monitoring")
COLUMNS = ("model", "model_version", "time", "raw_data", "raw_prediction", "groundtruth", "request_id", "status")
QUERY_TIMEOUT = 30.0
QUERY_MAX_ROWS = 10_000


def requests_dir(version_dir: Path) -> Path:
    return version_dir / "monitoring" / "requests"


@dataclass
class LogTarget:
    """Where one version's records go, and what share of calls is logged."""

    model: str
    version: str
    directory: Path
    sampling: float


class RequestLogWriter:
    """Buffers sampled predict calls and writes them as Parquet (see the module contract)."""

    def __init__(self, capacity: int = 100_000, flush_seconds: float = 10.0, batch_rows: int = 20_000) -> None:
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.dropped: collections.Counter[str] = collections.Counter()
        self.written: collections.Counter[str] = collections.Counter()
        self._queue: collections.deque[tuple[LogTarget, float, bytes, int, bytes]] = collections.deque()
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._requested = 0  # flush requests made, and served by a completed pass
        self._served = 0
        self._closed = False
        self._random = random.random
        self._thread = threading.Thread(target=self._run, name="mle-request-logs", daemon=True)
        self._thread.start()

    def record(self, target: LogTarget, body: bytes, status: int, payload: bytes) -> None:
        """Sample and queue one answered call (event loop; never blocks)."""
        try:
            rate = target.sampling
            if rate <= 0.0 or (rate < 1.0 and self._random() >= rate):
                return
            if len(self._queue) >= self.capacity:
                self.dropped[str(target.directory)] += 1
                return
            self._queue.append((target, time.time(), body, status, payload))
            if len(self._queue) >= self.batch_rows:
                self._wake.set()
        except Exception:  # never let logging fail the prediction it observes
            log.exception("request logging failed")

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything queued so far (blocking; not on the event loop)."""
        with self._flushed:
            self._requested += 1
            wanted = self._requested
            self._wake.set()
            self._flushed.wait_for(lambda: self._served >= wanted or not self._thread.is_alive(), timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._flushed:
                serving = self._requested  # everything queued before these requests is drained below
            try:
                self._drain()
            except Exception:  # a full disk must not kill the writer
                log.exception("writing request logs failed")
            with self._flushed:
                self._served = serving
                self._flushed.notify_all()
            if self._closed and not self._queue:
                return

    def _drain(self) -> None:
        # This thread shares the GIL (and, on a small machine, the cores) with the event loop
        # serving predictions: per-record Python work here is what logging costs the serving
        # path, so records are grouped by a cheap key and turned into columns in bulk.
        items = [self._queue.popleft() for _ in range(len(self._queue))]
        groups: dict[tuple[Path, str], list[tuple[LogTarget, float, bytes, int, bytes]]] = {}
        day_start, day_end, day = 0.0, 0.0, ""
        for item in items:
            when = item[1]
            if not day_start <= when < day_end:  # a new UTC day (once per day, not per record)
                midnight = dt.datetime.fromtimestamp(when, dt.timezone.utc).replace(
                    hour=0, minute=0, second=0, microsecond=0)
                day_start, day_end = midnight.timestamp(), midnight.timestamp() + 86400.0
                day = midnight.strftime("%Y-%m-%d")
            key = (item[0].directory, day)
            group = groups.get(key)
            if group is None:
                groups[key] = group = []
            group.append(item)
        for (directory, day), group in groups.items():
            write_records(requests_dir(directory) / f"date={day}", group)
            self.written[str(directory)] += len(group)


def write_records(folder: Path, items: list[tuple[LogTarget, float, bytes, int, bytes]]) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    n = len(items)
    targets, times, bodies, statuses, payloads = zip(*items, strict=True)
    # One random prefix per batch and the row's index: unique like a uuid4 per row, at a
    # fraction of the cost (this runs beside the serving event loop).
    prefix = uuid.uuid4().hex[:20]
    table = pa.table({
        "model": pa.array([t.model for t in targets], pa.string()),
        "model_version": pa.array([t.version for t in targets], pa.string()),
        "time": pa.array((np.asarray(times, dtype=np.float64) * 1_000_000).astype(np.int64),
                         pa.timestamp("us", tz="UTC")),
        "raw_data": _text(bodies),
        "raw_prediction": _text(payloads),
        "groundtruth": pa.nulls(n, pa.string()),
        "request_id": pa.array([f"{prefix}{i:012x}" for i in range(n)], pa.string()),
        "status": pa.array(statuses, pa.int32()),
    })
    name = f"part-{time.time_ns()}-{os.getpid()}.parquet"
    temporary = folder / f".{name}.tmp"
    # zstd level 1: near the default ratio on JSON text, for less CPU beside the serving path.
    pq.write_table(table, temporary, compression="zstd", compression_level=1)
    os.replace(temporary, folder / name)
    return folder / name


def _text(values: Sequence[bytes]) -> Any:
    """Request or response bodies as a string column: validated as UTF-8 in Arrow (C), and
    decoded with replacement in Python only when some body is not UTF-8."""
    import pyarrow as pa

    try:
        return pa.array(values, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([v.decode("utf-8", "replace") for v in values], pa.string())


# Reading --------------------------------------------------------------------------------------
def log_files(version_dir: Path, start: float | None = None, end: float | None = None) -> list[Path]:
    """The Parquet files whose day overlaps ``[start, end)`` (epoch seconds; None: open)."""
    root = requests_dir(version_dir)
    if not root.is_dir():
        return []
    first = _day(start) if start is not None else ""
    last = _day(end) if end is not None else "9999"
    found: list[Path] = []
    for day_dir in sorted(root.glob("date=*")):
        day = day_dir.name[len("date="):]
        if first <= day <= last:
            found.extend(sorted(p for p in day_dir.glob("*.parquet")))
    return found


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d")


def read_logs(version_dir: Path, start: float | None = None, end: float | None = None,
              columns: Iterable[str] = COLUMNS) -> Any:
    """The logged calls in ``[start, end)`` as one ``pyarrow.Table``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = list(columns)
    read = wanted if "time" in wanted else [*wanted, "time"]
    tables = [pq.read_table(p, columns=read) for p in log_files(version_dir, start, end)]
    if not tables:
        return empty_table().select(wanted)
    table = pa.concat_tables(tables)
    if start is not None:
        table = table.filter(pc.greater_equal(table["time"], pa.scalar(int(start * 1e6), pa.timestamp("us", "UTC"))))
    if end is not None:
        table = table.filter(pc.less(table["time"], pa.scalar(int(end * 1e6), pa.timestamp("us", "UTC"))))
    return table.select(wanted)


def empty_table() -> Any:
    import pyarrow as pa

    return pa.table({"model": pa.array([], pa.string()), "model_version": pa.array([], pa.string()),
                     "time": pa.array([], pa.timestamp("us", tz="UTC")), "raw_data": pa.array([], pa.string()),
                     "raw_prediction": pa.array([], pa.string()), "groundtruth": pa.array([], pa.string()),
                     "request_id": pa.array([], pa.string()), "status": pa.array([], pa.int32())})


def query(version_dir: Path, sql: str, *, table_name: str | None = None, max_rows: int = QUERY_MAX_ROWS,
          timeout: float = QUERY_TIMEOUT) -> dict[str, Any]:
    """Run ``sql`` over the version's logs: ``{"columns": [...], "rows": [[...]], "truncated": bool}``."""
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise invalid("sql", "is required: a SELECT over the table 'logs'")
    con = duckdb.connect(":memory:")
    try:
        logs = read_logs(version_dir)
        con.register("logs", logs)
        if table_name and table_name != "logs":
            con.register(table_name, logs)
        for setting in ("SET threads=1", "SET memory_limit='512MB'", "SET enable_external_access=false",
                        "SET autoinstall_known_extensions=false", "SET autoload_known_extensions=false",
                        "SET lock_configuration=true"):
            con.execute(setting)
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise MLEngineError(Code.DEADLINE_EXCEEDED, f"the query ran longer than {timeout:g} s") from None
        except duckdb.Error as err:
            raise invalid("sql", str(err).splitlines()[0]) from None
        finally:
            timer.cancel()
    finally:
        con.close()
    return {"columns": names, "rows": [[_json(v) for v in row] for row in rows[:max_rows]],
            "truncated": len(rows) > max_rows}


def _json(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)
