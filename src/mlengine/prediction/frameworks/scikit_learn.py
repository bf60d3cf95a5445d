"""scikit-learn (and pickled XGBoost scikit-learn wrappers): ``model.joblib`` or ``model.pkl``.

Instances are rows of numbers (``[[1.0, 2.0], ...]``), or objects keyed by feature name when
the model was fitted on a DataFrame (``feature_names_in_``); such models get a DataFrame with
their columns in order, so pipelines with column transformers and categorical features work.
Widths, names, types and (for models that cannot take them) NaN/Infinity are checked per
request before any batching.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import json_kind, numeric_matrix, rows_from_objects, split_rows
from mlengine.prediction.frameworks._base import (
    PICKLE_FILES,
    SCIKIT_LEARN,
    XGBOOST,
    LoadOptions,
    ModelLoadError,
    PredictionError,
    Predictor,
    Prepared,
    pickle_refused,
)


def load_pickle(model_dir: Path, allow: bool = True) -> tuple[Any, str]:
    """The object in ``model.joblib`` (joblib) or ``model.pkl`` (pickle), and its file name;
    ``allow`` False (``MLE_MODEL_ALLOW_PICKLE``) refuses to unpickle."""
    for name in PICKLE_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        if not allow:
            raise ModelLoadError(pickle_refused(name) + ".")
        try:
            if name.endswith(".joblib"):
                import joblib

                return joblib.load(path), name
            with open(path, "rb") as f:
                return pickle.load(f), name  # noqa: S301 - user's model, loaded in its replica only
        except Exception as err:
            raise ModelLoadError(f"Could not load {name}: {type(err).__name__}: {err}") from None
    raise ModelLoadError(f"No {' or '.join(PICKLE_FILES)} in the model directory.")


def _allows_nan(model: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:  # not a scikit-learn estimator, or an older scikit-learn: let it decide
        return True


_NOT_A_FLOAT = re.compile(r"could not convert string to float: (.+)$", re.MULTILINE)


def explain_frame_error(rows: list[list[Any]], names: Sequence[str], err: Exception) -> PredictionError | None:
    """Which instance and feature made a model fitted on a DataFrame fail (the slow path, run
    only once it has failed): a string where it wanted a number (the value the error names), a
    JSON object or list, or a null it cannot take. None when no value explains the error."""
    text = str(err).strip()
    detail = f" ({type(err).__name__}: {text.splitlines()[0].rstrip('.') if text else ''})"

    def first(match: Any) -> tuple[int, str, Any] | None:
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if match(value):
                    return i, names[j] if j < len(names) else str(j), value
        return None

    wanted = _NOT_A_FLOAT.search(text)
    if wanted:
        found = first(lambda v: isinstance(v, str) and repr(v) == wanted.group(1).strip())
        if found:
            return PredictionError(f"Instance {found[0]}, feature {found[1]!r}: expected a number, got "
                                   f"{json_kind(found[2])}.")
    found = first(lambda v: isinstance(v, (dict, list)))
    if found:
        return PredictionError(f"Instance {found[0]}, feature {found[1]!r}: expected a number or a string, got "
                               f"{json_kind(found[2])}.")
    if "nan" in text.lower():
        found = first(lambda v: v is None)
        if found:
            return PredictionError(f"Instance {found[0]}, feature {found[1]!r} is null, which this model does not "
                                   f"accept{detail}.")
    return None


class SklearnPredictor(Predictor):
    framework = SCIKIT_LEARN

    def __init__(self, model: Any, file_name: str) -> None:
        self.model = model
        self.file_name = file_name
        self._predict = model.predict
        names = getattr(model, "feature_names_in_", None)
        self.names: list[str] | None = [str(n) for n in names] if names is not None else None
        width = getattr(model, "n_features_in_", None)
        self.width: int | None = int(width) if width is not None else None
        self.allow_nan = _allows_nan(model)
        module = type(model).__module__ or ""
        self._framework = XGBOOST if module.startswith("xgboost") else SCIKIT_LEARN

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> SklearnPredictor:
        model, name = load_pickle(model_dir, options.allow_pickle)
        if not callable(getattr(model, "predict", None)):
            raise ModelLoadError(f"{name} holds a {type(model).__name__}, which has no predict method.")
        return cls(model, name)

    @property
    def detected_framework(self) -> str:
        return self._framework

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        if self.names is not None:
            if isinstance(instances[0], dict):
                rows = rows_from_objects(instances, self.names)
            else:
                rows = []
                for i, row in enumerate(instances):
                    if not isinstance(row, list) or len(row) != len(self.names):
                        got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
                        raise PredictionError(
                            f"Instance {i} has {got}, but the model expects {len(self.names)} features "
                            f"({', '.join(self.names)}); send a list in that order or an object keyed by name."
                        )
                    rows.append(row)
            return Prepared(len(rows), rows, key="frame")
        matrix = numeric_matrix(instances, self.width, allow_nonfinite=self.allow_nan)
        return Prepared(len(matrix), matrix, key="matrix")

    def _frame(self, rows: list[list[Any]]) -> Any:
        import pandas as pd

        return pd.DataFrame(rows, columns=self.names)

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        counts = [p.count for p in batch]
        if batch[0].key == "frame":
            rows = batch[0].data if len(batch) == 1 else [r for p in batch for r in p.data]
            try:
                outputs = np.asarray(self._predict(self._frame(rows)))
            except (ValueError, TypeError) as err:
                raise explain_frame_error(rows, self.names or [], err) or err from None
        else:
            features = batch[0].data if len(batch) == 1 else np.concatenate([p.data for p in batch])
            outputs = np.asarray(self._predict(features))
        if outputs.ndim == 0 or len(outputs) != sum(counts):
            raise PredictionError(
                f"The model returned {outputs.size} predictions for {sum(counts)} instances.", status=500
            )
        if outputs.dtype.kind not in "fiub":
            outputs = outputs.tolist()  # labels as strings, objects...
        return split_rows(outputs, counts)


PREDICTOR = SklearnPredictor
