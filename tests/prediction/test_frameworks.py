"""Every predictor behind the one interface, with a tiny real model of its framework."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

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
    ({"instances": [{"x": [1, "u", 3], "tag": "a", "blob": "b"}]},
     "Instance 0, input 'x', position [1]: expected a float32 number, got str 'u'."),
    ({"instances": [{"x": [1, 2, 3], "tag": "a", "blob": "b"}, {"x": [1, 2, {"v": 3}], "tag": "a", "blob": "b"}]},
     "Instance 1, input 'x', position [2]: expected a float32 number, got object {'v': 3}."),
    ({"instances": [["x", "tag", "blob"]], "signature_name": "double"},
     "Instance 0, input 'value', position [0]: expected a float32 number, got str 'x'."),
    ({"instances": ["one", 2], "signature_name": "double"},
     "Instance 0, input 'value': expected a float32 number, got str 'one'."),
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
    assert (status, answer["error"]) == (400, "Instance 1 has shape [1], but instance 0 has shape [2]: every "
                                              "instance must have the same shape.")
    status, answer = ask(engine, {"instances": [[1, 2], [3, "four"]]})
    assert (status, answer["error"]) == (400, "Instance 1, position [1]: expected a number, got str 'four'.")
    status, answer = ask(engine, {"instances": [[[1], [2, 3]]]})
    assert (status, answer["error"]) == (400, "Instance 0 is a ragged array: its lists have different lengths.")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"not torchscript")
    from mlengine.prediction.frameworks._base import ModelLoadError

    with pytest.raises(ModelLoadError, match="Could not load model.pt as TorchScript"):
        load_predictor(tmp_path / "bad", "PYTORCH")


# torch.export (model.pt2) --------------------------------------------------------------------
class _Pt2Models:
    """Two programs saved with torch.export.save: a dynamic batch, and one fixed to 1 row."""

    def __init__(self, root: Path) -> None:
        torch = pytest.importorskip("torch")

        class Doubler(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x.sum(dim=1) * 2

        self.dynamic, self.fixed = root / "dynamic", root / "fixed"
        batch = torch.export.Dim("batch")
        for where, example, dims in ((self.dynamic, torch.ones(4, 2), ({0: batch},)),
                                     (self.fixed, torch.ones(1, 2), None)):
            where.mkdir()
            torch.export.save(torch.export.export(Doubler(), (example,), dynamic_shapes=dims), str(where / "model.pt2"))


@pytest.fixture(scope="module")
def pt2_models(tmp_path_factory: pytest.TempPathFactory) -> _Pt2Models:
    return _Pt2Models(tmp_path_factory.mktemp("pt2"))


def test_torch_export_program(pt2_models: _Pt2Models) -> None:
    """Issue 10.4: model.pt2 loads beside TorchScript, with the same array handling."""
    from mlengine.prediction.frameworks._base import detect_framework
    from mlengine.prediction.frameworks.torch_export import TorchExportPredictor

    assert detect_framework({"model.pt2"}) == "PYTORCH"
    predictor = load_predictor(pt2_models.dynamic, "PYTORCH")
    assert isinstance(predictor, TorchExportPredictor) and predictor.batch_size is None
    engine = Engine(predictor)
    status, answer = ask(engine, {"instances": [[1, 2], [3, 4], [5, 6]]})
    assert status == 200 and answer["predictions"] == [6.0, 14.0, 22.0]
    status, answer = ask(engine, {"instances": [[1, 2, 3]]})
    assert (status, answer["error"]) == (400, "Instances have shape [3], but the model expects instances of "
                                              "shape [2].")
    status, answer = ask(engine, {"instances": [[1, 2], [3, "four"]]})
    assert (status, answer["error"]) == (400, "Instance 1, position [1]: expected a number, got str 'four'.")


def test_torch_export_program_with_a_fixed_batch_runs_in_chunks(pt2_models: _Pt2Models) -> None:
    predictor = load_predictor(pt2_models.fixed, "PYTORCH")
    assert predictor.batch_size == 1  # type: ignore[attr-defined]
    status, answer = ask(Engine(predictor), {"instances": [[1, 2], [3, 4], [5, 6]]})
    assert status == 200 and answer["predictions"] == [6.0, 14.0, 22.0]


def test_torch_export_is_preferred_and_bad_files_say_so(pt2_models: _Pt2Models, tmp_path: Path) -> None:
    import shutil

    import torch

    from mlengine.prediction.frameworks._base import ModelLoadError, detect_framework

    both = tmp_path / "both"
    shutil.copytree(pt2_models.dynamic, both)
    (both / "model.pt").write_bytes(b"a deprecated TorchScript file, never read")
    assert detect_framework({"model.pt", "model.pt2"}) == "PYTORCH"
    assert ask(Engine(load_predictor(both, "PYTORCH")), {"instances": [[1, 1]]})[1] == {"predictions": [4.0]}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt2").write_bytes(b"not a program")
    with pytest.raises(ModelLoadError, match="Could not load model.pt2 as a torch.export program"):
        load_predictor(tmp_path / "bad", "PYTORCH")

    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + y

    (tmp_path / "two").mkdir()
    torch.export.save(torch.export.export(Two(), (torch.ones(1, 2), torch.ones(1, 2))),
                      str(tmp_path / "two" / "model.pt2"))
    with pytest.raises(ModelLoadError, match="takes 2 inputs"):
        load_predictor(tmp_path / "two", "PYTORCH")


class _Touch:
    """A pickle payload: unpickling it creates a file (proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_torch_export_pickles_are_refused_when_the_server_takes_none(pt2_models: _Pt2Models, tmp_path: Path) -> None:
    """torch.export.load falls back to a full unpickle when its weights-only load fails; with
    MLE_MODEL_ALLOW_PICKLE=false that fallback is closed."""
    import contextlib
    import io
    import os
    import zipfile

    import torch

    from mlengine.prediction.frameworks._base import ModelLoadError

    marker = tmp_path / "code-ran"
    payload = io.BytesIO()
    torch.save((_Touch(marker),), payload)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    with zipfile.ZipFile(pt2_models.dynamic / "model.pt2") as src, \
            zipfile.ZipFile(hostile / "model.pt2", "w") as out:
        for info in src.infolist():  # the program's sample inputs become the payload
            data = src.read(info.filename)
            out.writestr(info, payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else data)
    with pytest.raises(ModelLoadError, match="MLE_MODEL_ALLOW_PICKLE=false"):
        load_predictor(hostile, "PYTORCH", LoadOptions(allow_pickle=False))
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    safe = load_predictor(pt2_models.dynamic, "PYTORCH", LoadOptions(allow_pickle=False))
    assert ask(Engine(safe), {"instances": [[2, 3]]})[1] == {"predictions": [10.0]}
    # torch logs the fallback with a broken format string, which pytest's log handler raises.
    with contextlib.suppress(ModelLoadError):
        load_predictor(hostile, "PYTORCH", LoadOptions(allow_pickle=True))
    assert marker.exists(), "the payload is real: torch unpickles it when pickles are allowed"


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


def test_xgboost_json_and_ubj_and_strings_in_features(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    import numpy as np

    from mlengine.prediction.deploy import inspect_source, resolve_framework
    from mlengine.prediction.launcher import zygote_kind

    rng = np.random.default_rng(2)
    x, y = rng.random((40, 3)), rng.random(40)
    booster = xgboost.XGBRegressor(n_estimators=4, max_depth=2).fit(x, y).get_booster()
    expected = booster.inplace_predict(x[:2]).tolist()
    for name in ("model.json", "model.ubj"):
        directory = tmp_path / name.replace(".", "_")
        directory.mkdir()
        booster.save_model(str(directory / name))
        source = inspect_source(str(directory), 10, 10**8)
        assert resolve_framework(source, None, None) == "XGBOOST"
        assert zygote_kind("XGBOOST", None, source.top_level) == "xgboost"
        engine = Engine(load_predictor(directory, "XGBOOST", LoadOptions(allow_pickle=False)))
        status, answer = ask(engine, {"instances": x[:2].tolist()})
        assert status == 200 and answer["predictions"] == pytest.approx(expected, rel=1e-6)
        status, answer = ask(engine, {"instances": [[0.1, 0.2, 0.3], [0.1, "high", 0.3]]})
        assert (status, answer["error"]) == (400, "Instance 1, feature 1: expected a number, got str 'high'.")
    assert zygote_kind("XGBOOST", None, {"model.joblib"}) == "sklearn"


def test_onnx_strings_in_numeric_inputs_name_the_instance_and_input(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    engine = Engine(load_predictor(tmp_path, "ONNX"))
    status, answer = ask(engine, {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]})
    assert status == 200 and answer["predictions"] == [3.0, 7.0]
    status, answer = ask(engine, {"instances": [{"a": 1, "b": 2}, {"a": "three", "b": 4}]})
    assert (status, answer["error"]) == (400, "Instance 1, input 'a': expected a number, got str 'three'.")
    status, answer = ask(engine, {"instances": [{"a": 1, "b": [2]}]})
    assert (status, answer["error"]) == (400, "Input 'b': each instance must have shape [], got [1].")
    assert onnx is not None


def test_onnx_matrix_input_with_a_string(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    import numpy as np
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    onnx_model = skl2onnx.convert_sklearn(LinearRegression().fit(x, x.sum(axis=1)),
                                          initial_types=[("input", FloatTensorType([None, 3]))])
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    engine = Engine(load_predictor(tmp_path, "ONNX"))
    status, answer = ask(engine, {"instances": [[1, 2, 3], [1, None, 3]]})
    assert (status, answer["error"]) == (400, "Instance 1, feature 1: expected a number, got null.")
    status, answer = ask(engine, {"instances": [{"input": [1, "2", 3]}]})
    assert (status, answer["error"]) == (400, "Instance 0, feature 1: expected a number, got str '2'.")
