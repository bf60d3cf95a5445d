"""Sharding, decoding, scoring and the output layout, without a server."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tests.batch.models import FEATURES, rides, sklearn_model, write_inputs

from mlengine.batch import shards
from mlengine.batch.decode import decode
from mlengine.batch.layout import Counts, Output, encode_results
from mlengine.batch.scoring import Scorer
from mlengine.errors import MLEngineError
from mlengine.prediction.frameworks._base import LoadOptions, load_predictor


def test_line_shards_cover_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(2500)) + '{"i": 2500}')  # no final newline
    planned = shards.plan([str(path)], "JSON", workers=1)
    assert [s.count for s in planned] == [1000, 1000, 501]
    seen = [json.loads(line)["i"] for s in planned for line in shards.lines(s)]
    assert seen == list(range(2501))


def test_gzipped_tfrecord_and_parquet_shards(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    files = write_inputs(tmp_path, [{"key": i, "x": float(i)} for i in range(1200)], "TF_RECORD")
    zipped = tmp_path / "z.tfrecord.gz"
    zipped.write_bytes(gzip.compress(files[0].read_bytes()))
    for path, fmt in ((files[0], "TF_RECORD"), (zipped, "TF_RECORD_GZIP")):
        planned = shards.plan([str(path)], fmt, workers=1)
        keys = [k for s in planned for k in decode(s, fmt, "key").keys or []]
        assert keys == list(range(1200))
    parquet = write_inputs(tmp_path / "pq", [{"key": i, "x": float(i)} for i in range(2100)], "PARQUET")
    planned = shards.plan([str(parquet[0])], "PARQUET", workers=2)
    assert [k for s in planned for k in decode(s, "PARQUET", "key").keys or []] == list(range(2100))


def test_a_pattern_that_matches_nothing_names_it(tmp_path: Path) -> None:
    (tmp_path / "x-1").write_text("1\n")
    assert shards.expand([str(tmp_path / "x-*")]) == [str(tmp_path / "x-1")]
    with pytest.raises(MLEngineError) as err:
        shards.expand([str(tmp_path / "x-*"), str(tmp_path / "y-*")])
    assert "predictionInput.inputPaths[1]" in err.value.message


def test_bad_lines_fail_alone_and_the_columnar_path_matches_prepare(tmp_path: Path) -> None:
    model = sklearn_model(tmp_path / "m")
    predictor = load_predictor(model, "SCIKIT_LEARN", LoadOptions())
    data = [{k: r[k] for k in ("key", *FEATURES)} for r in rides(200)]
    path = write_inputs(tmp_path / "in", data, "JSON")[0]
    shard = shards.plan([str(path)], "JSON", 1)[0]
    fast, errors = Scorer(predictor, 64).score(decode(shard, "JSON", "key"))
    assert not errors
    slow = predictor.predict([predictor.prepare([{k: r[k] for k in FEATURES} for r in data], {})])[0]
    assert fast == pytest.approx(list(slow))
    lines = path.read_text().splitlines()
    lines[3] = "{not json"
    lines[5] = json.dumps({**data[5], "pickup_latitude": "north"})
    path.write_text("\n".join(lines) + "\n")
    predictions, errors = Scorer(predictor, 4).score(decode(shard, "JSON", "key"))
    assert set(errors) == {3, 5} and "not valid JSON" in errors[3] and "north" in errors[5]
    assert predictions[4] == pytest.approx(fast[4]) and predictions[6] == pytest.approx(fast[6])


def test_results_and_commit_are_atomic(tmp_path: Path) -> None:
    body = encode_results([1.5, None, {"a": 1}], {1: "bad"}, ["k0", "k1", "k2"], "JSON")
    assert [json.loads(line) for line in body.splitlines()] == [
        {"prediction": 1.5, "key": "k0"}, {"error": "bad", "key": "k1"}, {"a": 1, "key": "k2"}]
    assert encode_results([1.0, 2.5], {}, None, "JSON") == b'{"prediction":1.0}\n{"prediction":2.5}\n'
    out = Output(str(tmp_path / "out"))
    assert out.is_empty()
    out.commit_shard(0, 2, "JSON", body, Counts(2, 1, {"bad": [1, None]}))
    assert set(out.done()) == {0} and out.done()[0].errors == 1
    out.finalize(out.done()[0])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["prediction.errors_stats-00000-of-00001", "prediction.results-00000-of-00002"]
