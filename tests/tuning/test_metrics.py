"""Reading what trials report: cloudml-hypertune's file, mlengine.hypertune, TensorFlow events."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from mlengine import hypertune as mle_hypertune
from mlengine.tuning.events import EventFileReader, event_files
from mlengine.tuning.metrics import MetricWatcher, Report, collect, intermediate_values, read_metric_file


def test_cloudml_hypertune_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypertune  # the PyPI package cloudml-hypertune

    path = tmp_path / "hp" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    reporter = hypertune.HyperTune()
    for step, value in ((10, 3.5), (20, 2.25), (30, 2.0)):
        reporter.report_hyperparameter_tuning_metric(hyperparameter_metric_tag="rmse", metric_value=value,
                                                     global_step=step)
    reports, others = read_metric_file(path, "rmse")
    assert [(r.step, r.value) for r in reports] == [(10, 3.5), (20, 2.25), (30, 2.0)]
    assert others == set()
    assert read_metric_file(path, "accuracy") == ([], {"rmse"})


def test_mlengine_hypertune_helper_writes_the_same_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deep" / "metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_TAG", "loss")
    mle_hypertune.report(None, 1.5, 1)
    mle_hypertune.report("loss", 1.25)
    mle_hypertune.report("accuracy", 0.5, 3)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"checkpoint_path": "", "global_step": "1", "loss": "1.5", "timestamp": lines[0]["timestamp"],
                        "trial": "0"}
    reports, others = read_metric_file(path, "loss")
    assert [(r.step, r.value) for r in reports] == [(1, 1.5), (0, 1.25)]
    assert others == {"accuracy"}
    with pytest.raises(ValueError, match="finite"):
        mle_hypertune.report(None, float("nan"))


def test_half_written_and_odd_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_text('{"rmse": "2.0", "global_step": "5"}\n[1, 2]\n{"rmse": "oops"}\n{"rmse": "1.')
    reports, _ = read_metric_file(path, "rmse")
    assert [(r.step, r.value) for r in reports] == [(5, 2.0)]
    assert read_metric_file(tmp_path / "missing", "rmse") == ([], set())


def test_intermediate_values_use_steps_or_order() -> None:
    assert intermediate_values([Report(10, 1.0, 0), Report(20, 0.5, 0)]) == {10: 1.0, 20: 0.5}
    assert intermediate_values([Report(0, 1.0, 0), Report(0, 0.5, 0), Report(0, float("inf"), 0)]) == {1: 1.0, 2: 0.5}


def _event(tag: str, value: float, step: int, wall: float) -> bytes:
    """A TF1-style scalar Event record, encoded by hand (protobuf wire format)."""

    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    def field(number: int, wire: int, payload: bytes) -> bytes:
        return varint(number << 3 | wire) + payload

    value_msg = field(1, 2, varint(len(tag)) + tag.encode()) + field(2, 5, struct.pack("<f", value))
    summary = field(1, 2, varint(len(value_msg)) + value_msg)
    data = (field(1, 1, struct.pack("<d", wall)) + field(2, 0, varint(step))
            + field(5, 2, varint(len(summary)) + summary))
    return struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4


def test_event_reader_is_incremental_and_waits_for_a_partial_record(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    first, second = _event("rmse", 3.0, 10, 1.0), _event("rmse", 2.0, 20, 2.0)
    path.write_bytes(first + _event("other", 9.0, 10, 1.0) + second[:7])
    reader = EventFileReader(path, "rmse")
    assert [(s.step, s.value) for s in reader.read_new()] == [(10, 3.0)]
    with open(path, "ab") as f:
        f.write(second[7:])
    assert [(s.step, s.value) for s in reader.read_new()] == [(20, 2.0)]
    assert reader.read_new() == []


def test_watcher_prefers_the_metric_file_and_picks_the_latest_run(tmp_path: Path) -> None:
    events = tmp_path / "job" / "3"
    (events / "train").mkdir(parents=True)
    (events / "eval").mkdir()
    (events / "train" / "events.out.tfevents.a").write_bytes(_event("rmse", 9.0, 1, 1.0) + _event("rmse", 8.0, 2, 2.0))
    (events / "eval" / "events.out.tfevents.b").write_bytes(_event("rmse", 5.0, 2, 3.0))
    assert event_files(events) == sorted(events.rglob("events.out.tfevents*"))
    metric_file = tmp_path / "hp" / "metrics"
    got = collect(metric_file, events, "rmse")
    assert got.source == "TensorFlow events" and [(r.step, r.value) for r in got.reports] == [(2, 5.0)]
    metric_file.parent.mkdir()
    metric_file.write_text('{"rmse": "4.0", "global_step": "7"}\n')
    watcher = MetricWatcher(metric_file, events, "rmse")
    got = watcher.poll(final=True)
    assert got.source == "metric file" and got.final == Report(7, 4.0, 0.0)
    assert collect(tmp_path / "none", None, "rmse").final is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed")
def test_event_files_written_by_tensorflow(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = f"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
md = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
with tf.summary.create_file_writer({str(tmp_path / "run")!r}).as_default():
    for step in (1, 2, 3):
        tf.summary.write("epoch_rmse", tf.constant(10.0 / step), step=step * 100, metadata=md)
        tf.summary.write("vector", tf.constant([1.0, 2.0]), step=step, metadata=md)
    tf.summary.write("as_double", tf.constant(2.5, tf.float64), step=7, metadata=md)
    tf.summary.write("as_int", tf.constant(-3, tf.int64), step=8, metadata=md)
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    [path] = event_files(tmp_path)
    assert [(s.step, round(s.value, 4)) for s in EventFileReader(path, "epoch_rmse").read_new()] == [
        (100, 10.0), (200, 5.0), (300, 3.3333)]
    assert EventFileReader(path, "vector").read_new() == []
    assert [s.value for s in EventFileReader(path, "as_double").read_new()] == [2.5]
    assert [s.value for s in EventFileReader(path, "as_int").read_new()] == [-3.0]
