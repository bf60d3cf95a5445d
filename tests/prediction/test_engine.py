"""The request pipeline (parsing, per-request validation, batching) with a real scikit-learn
pipeline, and the exact messages clients get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlengine.prediction.engine import Engine
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, load_predictor


@pytest.fixture(scope="module")
def engine(sk_model_dir: Path) -> Engine:
    return Engine(load_predictor(sk_model_dir, "SCIKIT_LEARN"), max_batch=4)


def one(engine: Engine, body: bytes | str) -> tuple[int, dict]:
    status, payload = engine.handle([body.encode() if isinstance(body, str) else body])[0]
    return status, json.loads(payload)


def test_predictions_match_the_model(engine: Engine, sk_model_dir: Path) -> None:
    import joblib
    import numpy as np

    rows = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]
    status, answer = one(engine, json.dumps({"instances": rows}))
    assert status == 200
    expected = joblib.load(sk_model_dir / "model.joblib").predict(np.asarray(rows))
    assert answer["predictions"] == expected.tolist()


@pytest.mark.parametrize(("body", "message"), [
    ("", "The request body is empty"),
    ("{nope", "The request body is not valid JSON: Expecting property name enclosed in double quotes"),
    ("[1, 2]", 'The request body must be a JSON object like {"instances": [...]}, not a list.'),
    ('{"rows": [[1, 2, 3]]}', 'The request body has no "instances" field'),
    ('{"inputs": [[1, 2, 3]]}', '(the "inputs" form is not supported)'),
    ('{"instances": {"a": 1}}', '"instances" must be a list, not a object.'),
    ('{"instances": []}', '"instances" is empty'),
    ('{"instances": [[1, 2]]}', "Instance 0 has 2 values, but the model expects 3 features."),
    ('{"instances": [[1, 2, 3], [1, 2]]}', "Instance 1 has 2 values, but the model expects 3 features."),
    ('{"instances": [[1, "x", 3]]}', "Instance 0, feature 1: expected a number, got str 'x'."),
    ('{"instances": [[1, null, 3]]}', "Instance 0, feature 1: expected a number, got null."),
    ('{"instances": [{"a": 1}]}', "Instance 0 is an object, but this model takes rows of numbers"),
    ('{"instances": [[1, NaN, 3]]}', "Instance 0, feature 1: NaN is not accepted by this model"),
    ('{"instances": [[1, 2, Infinity]]}', "Instance 0, feature 2: Infinity is not accepted by this model"),
])
def test_bad_requests_name_the_problem(engine: Engine, body: str, message: str) -> None:
    status, answer = one(engine, body)
    assert status == 400
    assert set(answer) == {"error"}
    assert message in answer["error"], answer["error"]


def test_batch_merges_requests_and_isolates_bad_ones(engine: Engine) -> None:
    bodies = [json.dumps({"instances": [[i, i, i]] * (1 + i % 3)}).encode() for i in range(6)]
    bodies.insert(2, b'{"instances": [[1, 2]]}')
    replies = engine.handle(bodies)
    assert [status for status, _ in replies] == [200, 200, 400, 200, 200, 200, 200]
    for body, (status, payload) in zip(bodies, replies, strict=True):
        if status == 200:  # batched answers equal answers computed alone
            assert payload == engine.handle([body])[0][1]


def test_frame_models_take_named_or_ordered_features(sk_frame_model_dir: Path) -> None:
    engine = Engine(load_predictor(sk_frame_model_dir, "SCIKIT_LEARN"))
    named = one(engine, '{"instances": [{"distance": 2.0, "payment": "card"}]}')
    ordered = one(engine, '{"instances": [[2.0, "card"]]}')
    assert named == ordered and named[0] == 200
    assert named[1]["predictions"][0] == pytest.approx(6.0)
    status, answer = one(engine, '{"instances": [{"distance": 2.0, "paid": "card"}]}')
    assert status == 400
    assert answer["error"] == ("Instance 0 is missing feature 'payment' and has unknown feature 'paid'; the model "
                               "expects the features: distance, payment.")
    status, answer = one(engine, '{"instances": [[2.0]]}')
    assert status == 400 and "expects 2 features (distance, payment)" in answer["error"]
    status, answer = one(engine, '{"instances": [{"distance": "far", "payment": "card"}]}')
    assert (status, answer["error"]) == (400, "Instance 0, feature 'distance': expected a number, got str 'far'.")
    status, answer = one(engine, '{"instances": [[1.0, "cash"], ["far", "cash"]]}')
    assert (status, answer["error"]) == (400, "Instance 1, feature 'distance': expected a number, got str 'far'.")
    status, answer = one(engine, '{"instances": [[{"km": 1}, "cash"]]}')
    assert (status, answer["error"]) == (400, "Instance 0, feature 'distance': expected a number or a string, "
                                              "got object {'km': 1}.")
    status, answer = one(engine, '{"instances": [[null, "cash"]]}')
    assert status == 400 and answer["error"].startswith("Instance 0, feature 'distance' is null, which this model "
                                                        "does not accept (ValueError: ")
    # Requests predicted together: the failure is pinned on the request that caused it.
    replies = engine.handle([b'{"instances": [[1.0, "cash"]]}', b'{"instances": [[2.0, "card"], ["x", "card"]]}'])
    assert replies[0][0] == 200 and replies[1][0] == 400 and b"Instance 1, feature 'distance'" in replies[1][1]


def test_a_model_that_does_not_load_says_why(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"this is not a pickle")
    with pytest.raises(ModelLoadError, match="Could not load model.joblib: "):
        load_predictor(tmp_path, "SCIKIT_LEARN")
    with pytest.raises(ModelLoadError, match="Unknown framework"):
        load_predictor(tmp_path, "CAFFE")
    with pytest.raises(ModelLoadError, match="Could not import module 'nope_module'"):
        load_predictor(tmp_path, "SCIKIT_LEARN", LoadOptions(prediction_class="nope_module.Predictor"))


def test_too_many_instances_is_400_stating_the_limit(sk_model_dir: Path) -> None:
    engine = Engine(load_predictor(sk_model_dir, "SCIKIT_LEARN"), max_instances=3)
    assert one(engine, json.dumps({"instances": [[0, 0, 0]] * 3}))[0] == 200
    status, answer = one(engine, json.dumps({"instances": [[0, 0, 0]] * 4}))
    assert (status, answer["error"]) == (400, '"instances" holds 4 instances; a request may hold at most 3 '
                                              "(MLE_PREDICT_MAX_INSTANCES): split it into several requests.")
    # The limit is per request: requests merged into one batch are each within it.
    replies = engine.handle([json.dumps({"instances": [[0, 0, 0]] * 3}).encode()] * 3)
    assert [status for status, _ in replies] == [200, 200, 200]
    default = Engine(load_predictor(sk_model_dir, "SCIKIT_LEARN"))
    assert one(default, json.dumps({"instances": [[0, 0, 0]] * 10_001}))[0] == 400
    assert one(default, json.dumps({"instances": [[0, 0, 0]] * 10_000}))[0] == 200
