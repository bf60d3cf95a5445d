"""Every predictor behind the one interface, with a tiny real model of its framework."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import pytest

from mlengine.prediction.engine import Engine
from mlengine.prediction.frameworks._base import LoadOptions, load_predictor


def ask(engine: Engine, request: dict) -> tuple[int, dict]:
    status, payload = engine.handle([json.dumps(request).encode()])[0]
    return status, json.loads(payload)


# TensorFlow ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf_engine(tf_model_dir: Path) -> Engine:
    return Engine(load_predictor(tf_model_dir, "TENSORFLOW"))


def test_tensorflow_named_inputs_and_b64(tf_engine: Engine) -> None:
    blob = base64.b64encode(b"\x00\x01\x02\xff").decode()
    status, answer = ask(tf_engine, {"instances": [
        {"x": [1, 2, 3], "tag": "a", "blob": {"b64": blob}},
        {"x": [0.5, 0.5, 0], "tag": "b", "blob": "xy"},
    ]})
    assert status == 200, answer
    assert answer["predictions"] == [{"total": 6.0, "tag": "A", "size": 4}, {"total": 1.0, "tag": "B", "size": 2}]


def test_tensorflow_positional_inputs_and_signature_name(tf_engine: Engine) -> None:
    names = list(tf_engine.predictor.signatures["serving_default"].inputs)  # type: ignore[attr-defined]
    order = [n for n, _ in names]
    values = {"x": [1, 1, 1], "tag": "q", "blob": "z"}
    status, answer = ask(tf_engine, {"instances": [[values[n] for n in order]]})
    assert status == 200 and answer["predictions"][0]["total"] == 3.0
    status, answer = ask(tf_engine, {"instances": [1.5, 2], "signature_name": "double"})
    assert status == 200 and answer["predictions"] == [{"doubled": 3.0}, {"doubled": 4.0}]


@pytest.mark.parametrize(("request_body", "message"), [
    ({"instances": [1.0], "signature_name": "nope"}, "The model has no signature 'nope'; its signatures are: double, "
                                                     "serving_default."),
    ({"instances": [{"x": [1, 2, 3], "tag": "a"}]}, "Instance 0 is missing input 'blob'"),
    ({"instances": [{"x": [1, 2, 3], "tag": "a", "blob": "b", "more": 1}]}, "Instance 0 has unknown input 'more'"),
    ({"instances": [{"x": [1, 2], "tag": "a", "blob": "b"}]}, "Input 'x': each instance must have shape [3], got [2]."),
    ({"instances": [{"x": [1, "u", 3], "tag": "a", "blob": "b"}]}, "Input 'x': expected float32 values"),
    ({"instances": [{"x": [1, 2, 3], "tag": 5, "blob": "b"}]}, "Input 'tag', instance 0: expected a string, got int"),
    ({"instances": [{"x": [1, 2, 3], "tag": "a", "blob": {"b64": "!!"}}]}, "the b64 value is not valid base64"),
])
def test_tensorflow_bad_inputs(tf_engine: Engine, request_body: dict, message: str) -> None:
    status, answer = ask(tf_engine, request_body)
    assert status == 400 and message in answer["error"], answer


# XGBoost ------------------------------------------------------------------------------------
def test_xgboost_booster_and_pickled_wrapper(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    import joblib
    import numpy as np

    rng = np.random.default_rng(1)
    x, y = rng.random((50, 4)), rng.random(50)
    regressor = xgboost.XGBRegressor(n_estimators=5, max_depth=2).fit(x, y)
    (tmp_path / "bst").mkdir()
    regressor.get_booster().save_model(str(tmp_path / "bst" / "model.bst"))
    (tmp_path / "pkl").mkdir()
    joblib.dump(regressor, tmp_path / "pkl" / "model.joblib")
    expected = regressor.predict(x[:2]).tolist()
    for sub in ("bst", "pkl"):
        predictor = load_predictor(tmp_path / sub, "XGBOOST")
        assert predictor.detected_framework == "XGBOOST"
        status, answer = ask(Engine(predictor), {"instances": x[:2].tolist()})
        assert status == 200
        assert answer["predictions"] == pytest.approx(expected, rel=1e-6)
    status, answer = ask(Engine(load_predictor(tmp_path / "bst", "XGBOOST")), {"instances": [[1, 2, 3]]})
    assert status == 400 and "Instance 0 has 3 values, but the model expects 4 features" in answer["error"]
    # A pickle found by file name alone is reported as what it really is.
    assert load_predictor(tmp_path / "pkl", "SCIKIT_LEARN").detected_framework == "XGBOOST"


# ONNX ---------------------------------------------------------------------------------------
def test_onnx_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    import numpy as np
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    model = LinearRegression().fit(x, x.sum(axis=1))
    onnx_model = skl2onnx.convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 3]))])
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    engine = Engine(load_predictor(tmp_path, "ONNX"))
    status, answer = ask(engine, {"instances": [[1, 2, 3], [0, 0, 1]]})
    assert status == 200
    assert np.asarray(answer["predictions"]).ravel() == pytest.approx([6.0, 1.0], abs=1e-4)
    status, answer = ask(engine, {"instances": [[1, 2]]})
    assert status == 400 and "expects 3 features" in answer["error"]


# TorchScript --------------------------------------------------------------------------------
def test_torchscript(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Doubler(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=1) * 2

    torch.jit.save(torch.jit.script(Doubler()), str(tmp_path / "model.pt"))
    engine = Engine(load_predictor(tmp_path, "PYTORCH"))
    status, answer = ask(engine, {"instances": [[1, 2], [3, 4]]})
    assert status == 200 and answer["predictions"] == [6.0, 14.0]
    status, answer = ask(engine, {"instances": [[1, 2], [3]]})
    assert status == 400 and "The instances are not a regular array of numbers" in answer["error"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"not torchscript")
    from mlengine.prediction.frameworks._base import ModelLoadError

    with pytest.raises(ModelLoadError, match="Could not load model.pt as TorchScript"):
        load_predictor(tmp_path / "bad", "PYTORCH")


# Custom prediction routines -----------------------------------------------------------------
def test_custom_routine_gets_raw_instances_and_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "shout_predictor.py").write_text(textwrap.dedent("""
        import os

        class Shout:
            def __init__(self, suffix):
                self.suffix = suffix

            @classmethod
            def from_path(cls, model_dir):
                with open(os.path.join(model_dir, "suffix.txt")) as f:
                    return cls(f.read().strip())

            def predict(self, instances, **kwargs):
                times = kwargs.get("times", 1)
                return [(text.upper() + self.suffix) * times for text in instances]
    """))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "suffix.txt").write_text("!")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    predictor = load_predictor(tmp_path / "model", "", LoadOptions(prediction_class="shout_predictor.Shout"))
    engine = Engine(predictor)
    assert ask(engine, {"instances": ["hi", "yo"], "times": 2}) == (200, {"predictions": ["HI!HI!", "YO!YO!"]})
    status, answer = ask(engine, {"instances": [3]})
    assert status == 400
    assert answer["error"] == "Prediction failed: AttributeError: 'int' object has no attribute 'upper'"
