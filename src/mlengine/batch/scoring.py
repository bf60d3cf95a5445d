"""Running a predictor over decoded instances: the predictor code online prediction uses
(``prepare`` then ``predict``), with batch prediction's error rule.

- Model calls take up to ``call_rows`` instances (consecutive ``batchSize`` batches merged,
  as the online engine merges requests); a call that fails is retried per ``batchSize``
  batch, and a batch that fails per instance, so an error is pinned on the instance that
  caused it and every other instance is predicted.
- Columnar fast path: when the instances are a pyarrow Table whose columns are what the
  model takes (a scikit-learn model's features, a SavedModel signature's inputs), the model's
  input is built from the columns directly (no Python object per value); the predictor's own
  ``prepare`` is the path for everything else and for the retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mlengine.batch.decode import Decoded
from mlengine.prediction.frameworks._base import PredictionError, Predictor, Prepared

#: Most instances one model call takes (merged batches).
CALL_ROWS = 16_384


def problem(err: BaseException) -> str:
    """The message recorded for an instance that failed."""
    if isinstance(err, PredictionError):
        return err.message
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"Prediction failed: {type(err).__name__}" + (f": {text}" if text else "")


def _sklearn_columns(predictor: Any, table: Any, positional: bool) -> Prepared | None:
    names = predictor.names
    columns = table.column_names
    if names is not None:
        if positional and len(columns) == len(names):
            table = table.rename_columns(names)
        elif not set(names).issubset(columns):
            return None
        frame = table.select(names).to_pandas()
        return Prepared(table.num_rows, frame, key="frame")
    import pyarrow.types as pt

    width = predictor.width
    if width is None or len(columns) != width or not positional:
        return None
    if not all(pt.is_integer(t) or pt.is_floating(t) for t in table.schema.types):
        return None
    if any(table.column(c).null_count for c in columns):
        return None
    matrix = np.column_stack([table.column(c).to_numpy() for c in columns]).astype(np.float64, copy=False)
    return Prepared(table.num_rows, matrix, key="matrix")


def _tensorflow_columns(predictor: Any, table: Any, positional: bool, kwargs: Mapping[str, Any]) -> Prepared | None:
    import pyarrow.types as pt

    signature = predictor.signatures.get(kwargs.get("signature_name", "serving_default"))
    if signature is None:
        return None
    names = [name for name, _ in signature.inputs]
    if positional and table.num_columns == len(names):
        table = table.rename_columns(names)
    if not set(names).issubset(table.column_names):
        return None
    tf = predictor.tf
    data: dict[str, Any] = {}
    for name, spec in signature.inputs:
        column = table.column(name)
        if column.null_count or spec.shape.rank != 1:
            return None
        if spec.dtype == tf.string:
            if not pt.is_string(column.type) and not pt.is_large_string(column.type):
                return None
            data[name] = np.asarray(column.to_pylist(), dtype=object)
        else:
            if not (pt.is_integer(column.type) or pt.is_floating(column.type) or pt.is_boolean(column.type)):
                return None
            data[name] = column.to_numpy().astype(spec.dtype.as_numpy_dtype, copy=False)
    return Prepared(table.num_rows, data, key=signature.name)


def columnar(predictor: Predictor, table: Any, positional: bool, kwargs: Mapping[str, Any]) -> Prepared | None:
    """The model's input built from ``table``'s columns, or None when the fast path does not apply."""
    from mlengine.prediction.frameworks.scikit_learn import SklearnPredictor

    if isinstance(predictor, SklearnPredictor):
        return _sklearn_columns(predictor, table, positional)
    if predictor.framework == "TENSORFLOW" and hasattr(predictor, "signatures"):
        return _tensorflow_columns(predictor, table, positional, kwargs)
    return None


class Scorer:
    """Predictions (or errors) for decoded instances. One thread."""

    def __init__(self, predictor: Predictor, batch_size: int, kwargs: Mapping[str, Any] | None = None,
                 call_rows: int = CALL_ROWS) -> None:
        self.predictor = predictor
        self.batch_size = max(1, batch_size)
        self.kwargs = dict(kwargs or {})
        self.call_rows = max(self.batch_size, call_rows) if predictor.batchable else self.batch_size

    def score(self, decoded: Decoded,
              progress: Callable[[int], None] | None = None) -> tuple[list[Any], dict[int, str]]:
        """``(predictions, errors)``: one prediction per instance (None where it failed) and
        the failed positions with their message; ``progress`` is told how many instances are
        done after each model call."""
        report = progress or (lambda done: None)
        predictions: list[Any] = [None] * decoded.count
        errors = dict(decoded.bad)
        if decoded.table is not None and not errors:
            rows: list[Any] | None = None
            for start in range(0, decoded.count, self.call_rows):
                stop = min(decoded.count, start + self.call_rows)
                prepared = None
                try:
                    prepared = columnar(self.predictor, decoded.table.slice(start, stop - start),
                                        decoded.positional, self.kwargs)
                    if prepared is not None:
                        self._store(predictions, list(range(start, stop)), self.predictor.predict([prepared])[0])
                        report(stop)
                        continue
                except Exception:  # the general path below pins the error on its instance
                    pass
                if rows is None:
                    rows = decoded.rows()
                self._run(rows, list(range(start, stop)), predictions, errors)
                report(stop)
            return predictions, errors
        rows = decoded.rows()
        good = [i for i in range(decoded.count) if i not in errors]
        for start in range(0, len(good), self.call_rows):
            chunk = good[start:start + self.call_rows]
            self._run(rows, chunk, predictions, errors)
            report(chunk[-1] + 1)
        return predictions, errors

    def _call(self, rows: list[Any], positions: list[int]) -> Any:
        prepared = self.predictor.prepare([rows[i] for i in positions], self.kwargs)
        return self.predictor.predict([prepared])[0]

    @staticmethod
    def _store(predictions: list[Any], positions: list[int], outputs: Any) -> None:
        if len(outputs) != len(positions):
            raise PredictionError(f"The model returned {len(outputs)} predictions for {len(positions)} instances.")
        for i, value in zip(positions, outputs, strict=True):
            predictions[i] = value

    def _run(self, rows: list[Any], positions: list[int], predictions: list[Any], errors: dict[int, str]) -> None:
        try:
            self._store(predictions, positions, self._call(rows, positions))
            return
        except Exception as err:
            if len(positions) == 1:
                errors[positions[0]] = problem(err)
                return
        step = self.batch_size if len(positions) > self.batch_size else 1
        for start in range(0, len(positions), step):
            self._run(rows, positions[start:start + step], predictions, errors)
