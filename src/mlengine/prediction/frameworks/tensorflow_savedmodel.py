"""TensorFlow SavedModel (``saved_model.pb``), called through one of its signatures.

- ``signature_name`` in the request body picks the signature (default ``serving_default``).
- Inputs are named (each instance an object ``{input: value}``) or, for a signature with one
  input, the instance itself; for several inputs an instance may also be a list holding the
  inputs in the signature's order, by name as ``saved_model_cli show`` lists them (positional).
- Binary values travel as ``{"b64": "<base64>"}`` (AI Platform's convention) and string
  outputs that are not UTF-8 come back the same way.
- Predictions are one object per instance, keyed by the signature's output names.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import explain_values, split_rows
from mlengine.prediction.frameworks._base import (
    TENSORFLOW,
    LoadOptions,
    ModelLoadError,
    PredictionError,
    Predictor,
    Prepared,
)

DEFAULT_SIGNATURE = "serving_default"


@dataclass
class _Signature:
    name: str
    function: Any
    inputs: list[tuple[str, Any]]  # (name, TensorSpec) in the signature's order
    outputs: list[str]


def _to_bytes(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError as err:
                raise PredictionError(f"{where}: the b64 value is not valid base64: {err}") from None
        raise PredictionError(f"{where}: expected a string or {{\"b64\": ...}}, got an object.")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_to_bytes(v, where) for v in value]
    raise PredictionError(f"{where}: expected a string, got {type(value).__name__} {value!r}.")


def _from_output(value: Any, name: str) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_from_output(v, name) for v in value]
    return value


class SavedModelPredictor(Predictor):
    framework = TENSORFLOW

    def __init__(self, loaded: Any) -> None:
        import tensorflow as tf

        self.tf = tf
        self.loaded = loaded  # keeps the functions' variables alive
        self.signatures: dict[str, _Signature] = {}
        for name, function in loaded.signatures.items():
            specs = function.structured_input_signature[1]
            outputs = function.structured_outputs
            # Sorted by name (saved_model_cli's order): a loaded signature's own order is arbitrary,
            # and list instances (CSV rows in batch prediction) need one that does not change.
            self.signatures[name] = _Signature(
                name, function, sorted(specs.items()), list(outputs) if isinstance(outputs, Mapping) else ["output_0"]
            )

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> SavedModelPredictor:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(model_dir))
        except Exception as err:
            raise ModelLoadError(f"Could not load the SavedModel: {type(err).__name__}: {err}") from None
        predictor = cls(loaded)
        if not predictor.signatures:
            raise ModelLoadError("The SavedModel has no signatures; export it with a 'serving_default' signature.")
        return predictor

    def _signature(self, name: Any) -> _Signature:
        found = self.signatures.get(name) if isinstance(name, str) else None
        if found is None:
            raise PredictionError(
                f"The model has no signature {name!r}; its signatures are: {', '.join(sorted(self.signatures))}."
            )
        return found

    def _column(self, values: list[Any], name: str, spec: Any) -> np.ndarray:
        where = f"Input {name!r}"
        if spec.dtype == self.tf.string:
            array = np.empty(len(values), dtype=object)
            for i, value in enumerate(values):
                array[i] = _to_bytes(value, f"{where}, instance {i}")
            if spec.shape.rank is not None and spec.shape.rank > 1:
                array = np.array(array.tolist(), dtype=object)
        else:
            try:
                array = np.asarray(values, dtype=spec.dtype.as_numpy_dtype)
            except (TypeError, ValueError, OverflowError):
                raise explain_values(values, f"input {name!r}", f"{spec.dtype.name} number") from None
        expected = spec.shape[1:] if spec.shape.rank is not None else None
        if expected is not None and not expected.is_compatible_with(array.shape[1:]):
            raise PredictionError(
                f"{where}: each instance must have shape {expected.as_list()}, got {list(array.shape[1:])}."
            )
        return array

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        signature = self._signature(kwargs.get("signature_name", DEFAULT_SIGNATURE))
        names = [n for n, _ in signature.inputs]
        columns: dict[str, np.ndarray] = {}
        if len(signature.inputs) == 1 and not (
            isinstance(instances[0], dict) and set(instances[0]) == {names[0]}
        ):
            name, spec = signature.inputs[0]
            return Prepared(len(instances), {name: self._column(instances, name, spec)}, key=signature.name)
        wanted = set(names)
        rows: list[Mapping[str, Any]] = []
        for i, instance in enumerate(instances):
            if isinstance(instance, list) and len(instance) == len(names):
                instance = dict(zip(names, instance, strict=True))
            if not isinstance(instance, dict):
                raise PredictionError(
                    f"Instance {i} must be an object keyed by input name (or a list of {len(names)} values in "
                    f"the order {', '.join(names)}); signature {signature.name!r} takes: {', '.join(names)}."
                )
            if instance.keys() != wanted:
                missing = [n for n in names if n not in instance]
                unknown = [k for k in instance if k not in wanted]
                problem = (f"is missing input {missing[0]!r}" if missing else f"has unknown input {unknown[0]!r}")
                raise PredictionError(
                    f"Instance {i} {problem}; signature {signature.name!r} takes: {', '.join(names)}."
                )
            rows.append(instance)
        for name, spec in signature.inputs:
            columns[name] = self._column([row[name] for row in rows], name, spec)
        return Prepared(len(instances), columns, key=signature.name)

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        signature = self._signature(batch[0].key)
        tensors = {}
        for name, _spec in signature.inputs:
            array = batch[0].data[name] if len(batch) == 1 else np.concatenate([p.data[name] for p in batch])
            tensors[name] = self.tf.constant(array)
        result = signature.function(**tensors)
        if not isinstance(result, Mapping):
            result = {"output_0": result}
        columns = {key: _from_output(value.numpy().tolist(), key) for key, value in result.items()}
        total = sum(p.count for p in batch)
        for key, values in columns.items():
            if not isinstance(values, list) or len(values) != total:
                raise PredictionError(f"Output {key!r} does not have one row per instance.", status=500)
        keys = list(columns)
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        return split_rows(rows, [p.count for p in batch])


PREDICTOR = SavedModelPredictor
