"""The request-log writer and its queries: every sampled call recorded from many threads, none
at 0 %, drops counted when the queue is full, Parquet by day, SQL sandboxed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mlengine.errors import MLEngineError
from mlengine.monitoring import logs


def _target(tmp_path: Path, sampling: float) -> logs.LogTarget:
    return logs.LogTarget("fares", "v1", tmp_path / "v1", sampling)


def test_every_call_is_recorded_at_100_percent_from_many_threads(tmp_path: Path) -> None:
    writer = logs.RequestLogWriter(flush_seconds=0.05)
    target = _target(tmp_path, 1.0)

    def client(n: int) -> None:
        for i in range(100):
            body = json.dumps({"instances": [{"client": n, "i": i}]}).encode()
            writer.record(target, body, 200, b'{"predictions": [1.0]}')

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    writer.close()
    result = logs.query(target.directory, "SELECT count(*), count(DISTINCT request_id), min(status), "
                        "count(groundtruth) FROM logs")
    assert result["rows"] == [[3200, 3200, 200, 0]]
    assert writer.written[str(target.directory)] == 3200 and not writer.dropped
    files = logs.log_files(target.directory)
    assert files and all(f.parent.name.startswith("date=") for f in files)
    one = logs.query(target.directory, "SELECT model, model_version, raw_data, raw_prediction FROM logs LIMIT 1")
    assert one["columns"] == ["model", "model_version", "raw_data", "raw_prediction"]
    assert one["rows"][0][:2] == ["fares", "v1"] and json.loads(one["rows"][0][2])["instances"]


def test_nothing_is_written_at_0_percent(tmp_path: Path) -> None:
    writer = logs.RequestLogWriter(flush_seconds=0.05)
    target = _target(tmp_path, 0.0)
    for _ in range(100):
        writer.record(target, b'{"instances": [1]}', 200, b"{}")
    writer.flush()
    writer.close()
    assert not logs.requests_dir(target.directory).exists()
    assert logs.query(target.directory, "SELECT count(*) FROM logs")["rows"] == [[0]]


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    writer = logs.RequestLogWriter(capacity=10, flush_seconds=60, batch_rows=1_000_000)
    target = _target(tmp_path, 1.0)
    for _ in range(25):
        writer.record(target, b'{"instances": [1]}', 200, b"{}")
    assert writer.dropped[str(target.directory)] == 15
    writer.flush()
    writer.close()
    assert logs.query(target.directory, "SELECT count(*) FROM logs")["rows"] == [[10]]


def test_sampling_draws_about_its_share(tmp_path: Path) -> None:
    writer = logs.RequestLogWriter(flush_seconds=0.05)
    target = _target(tmp_path, 0.25)
    for _ in range(4000):
        writer.record(target, b'{"instances": [1]}', 200, b"{}")
    writer.flush()
    writer.close()
    count = logs.query(target.directory, "SELECT count(*) FROM logs")["rows"][0][0]
    assert 800 < count < 1200


@pytest.mark.parametrize("sql", ["SELECT * FROM read_csv('/etc/passwd')", "COPY logs TO '/tmp/out.csv'",
                                 "SET enable_external_access=true", "ATTACH '/tmp/x.db'", "SELECT nope FROM logs"])
def test_queries_cannot_reach_files_or_change_settings(tmp_path: Path, sql: str) -> None:
    with pytest.raises(MLEngineError) as caught:
        logs.query(tmp_path, sql)
    assert caught.value.code.http_status == 400 and "sql" in caught.value.message


def test_the_bigquery_table_name_is_an_alias(tmp_path: Path) -> None:
    writer = logs.RequestLogWriter(flush_seconds=0.05)
    writer.record(_target(tmp_path, 1.0), b'{"instances": [1]}', 200, b"{}")
    writer.flush()
    writer.close()
    assert logs.query(tmp_path / "v1", "SELECT count(*) FROM fares_log", table_name="fares_log")["rows"] == [[1]]
