"""ONNX Runtime: ``model.onnx``.

A model with one input takes rows (``[[1.0, 2.0], ...]``, checked against the input's width
and element type); a model with several inputs takes objects keyed by input name. With one
output the predictions are its rows; with several, one object per instance keyed by output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import explain_values, numeric_matrix, split_rows
from mlengine.prediction.frameworks._base import ONNX, LoadOptions, ModelLoadError, PredictionError, Predictor, Prepared

_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
}  # fmt: skip


class OnnxPredictor(Predictor):
    framework = ONNX

    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs = [(i.name, _DTYPES.get(i.type), i.shape) for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        #: Whether messages name the input (models with several; one input is the instance itself).
        self.named = len(self.inputs) > 1

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> OnnxPredictor:
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelLoadError(f"Could not load model.onnx: {type(err).__name__}: {err}") from None
        return cls(session)

    def _column(self, values: Sequence[Any], name: str, dtype: Any, shape: Any) -> np.ndarray:
        if dtype is None:
            raise PredictionError(f"Input {name!r} has a type this server cannot feed from JSON.")
        width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        if len(shape) == 2:
            return numeric_matrix(values, width, dtype=dtype, what=f"input {name!r}" if self.named else "")
        try:
            array = np.asarray(values, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise explain_values(values, f"input {name!r}" if self.named else "", "number") from None
        wanted = [d if isinstance(d, int) else None for d in shape[1:]]
        if array.ndim != len(shape) or any(w is not None and w != g
                                           for w, g in zip(wanted, array.shape[1:], strict=True)):
            shown = [d if d is not None else "any" for d in wanted]
            raise PredictionError(f"Input {name!r}: each instance must have shape {shown}, got "
                                  f"{list(array.shape[1:])}.")
        return array

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        if len(self.inputs) == 1:
            name, dtype, shape = self.inputs[0]
            values: Any = instances
            if isinstance(instances[0], dict):
                values = [inst.get(name) if isinstance(inst, dict) else inst for inst in instances]
            return Prepared(len(instances), {name: self._column(values, name, dtype, shape)})
        columns = {}
        for name, dtype, shape in self.inputs:
            missing = [i for i, inst in enumerate(instances) if not isinstance(inst, dict) or name not in inst]
            if missing:
                raise PredictionError(
                    f"Instance {missing[0]} has no input {name!r}; the model takes: "
                    + ", ".join(n for n, _, _ in self.inputs) + "."
                )
            columns[name] = self._column([inst[name] for inst in instances], name, dtype, shape)
        return Prepared(len(instances), columns)

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        feeds = {name: (batch[0].data[name] if len(batch) == 1 else np.concatenate([p.data[name] for p in batch]))
                 for name, _, _ in self.inputs}
        results = self.session.run(None, feeds)
        counts = [p.count for p in batch]
        if len(results) == 1:
            return split_rows(np.asarray(results[0]), counts)
        arrays = [np.asarray(r).tolist() for r in results]
        rows = [dict(zip(self.outputs, values, strict=True)) for values in zip(*arrays, strict=True)]
        return split_rows(rows, counts)


PREDICTOR = OnnxPredictor
