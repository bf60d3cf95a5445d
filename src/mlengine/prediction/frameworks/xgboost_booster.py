"""XGBoost: a Booster in XGBoost's own format (``model.bst``, ``model.ubj`` or ``model.json``,
written by ``save_model``), or a pickled scikit-learn wrapper (``model.joblib`` / ``model.pkl``,
served by the scikit-learn predictor and reported as XGBOOST).

Instances are rows of numbers. XGBoost takes NaN as "missing" (null is refused: send NaN),
but not infinities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import numeric_matrix, rows_from_objects, split_rows
from mlengine.prediction.frameworks._base import (
    XGBOOST,
    XGBOOST_NATIVE_FILES,
    LoadOptions,
    ModelLoadError,
    PredictionError,
    Predictor,
    Prepared,
)


class BoosterPredictor(Predictor):
    framework = XGBOOST

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        names = booster.feature_names
        self.names: list[str] | None = list(names) if names else None
        self.width = int(booster.num_features())

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> Predictor:
        path = next((model_dir / name for name in XGBOOST_NATIVE_FILES if (model_dir / name).is_file()), None)
        if path is None:
            from mlengine.prediction.frameworks.scikit_learn import SklearnPredictor

            return SklearnPredictor.load(model_dir, options)  # a pickled XGBRegressor/XGBClassifier
        import xgboost

        try:
            booster = xgboost.Booster()
            booster.load_model(str(path))  # the format follows the suffix (.json, .ubj; else binary)
        except Exception as err:
            raise ModelLoadError(f"Could not load {path.name}: {type(err).__name__}: {err}") from None
        return cls(booster)

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        rows: Any = instances
        if self.names and isinstance(instances[0], dict):
            rows = rows_from_objects(instances, self.names)
        matrix = numeric_matrix(rows, self.width, names=self.names, dtype=np.float32)
        if np.isinf(matrix).any():
            i, j = (int(v[0]) for v in np.nonzero(np.isinf(matrix)))
            raise PredictionError(f"Instance {i}, feature {j}: Infinity is not accepted by XGBoost models.")
        return Prepared(len(matrix), matrix)

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        features = batch[0].data if len(batch) == 1 else np.concatenate([p.data for p in batch])
        outputs = np.asarray(self.booster.inplace_predict(features, validate_features=False))
        return split_rows(outputs, [p.count for p in batch])


PREDICTOR = BoosterPredictor
