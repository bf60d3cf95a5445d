"""Custom prediction routines: ``predictionClass`` ``module.Class`` from the version's packages.

The class follows AI Platform's interface::

    class MyPredictor:
        @classmethod
        def from_path(cls, model_dir): ...          # load whatever the directory holds
        def predict(self, instances, **kwargs): ... # a list, one prediction per instance

This is how preprocessing travels with a model. Extra fields of the request body are passed as
``kwargs``. Each request gets its own ``predict`` call (the routine decides what a batch is).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.prediction.frameworks._base import (
    CUSTOM,
    LoadOptions,
    ModelLoadError,
    PredictionError,
    Predictor,
    Prepared,
)


def import_class(qualified: str) -> Any:
    module_name, _, class_name = qualified.rpartition(".")
    if not module_name or not class_name:
        raise ModelLoadError(f"predictionClass {qualified!r} must be module.ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ModelLoadError(
            f"Could not import module {module_name!r} of predictionClass {qualified}: {type(err).__name__}: {err}"
        ) from None
    found = getattr(module, class_name, None)
    if found is None:
        raise ModelLoadError(f"Module {module_name!r} has no class {class_name!r} (predictionClass {qualified}).")
    return found


class CustomPredictor(Predictor):
    framework = CUSTOM
    batchable = False

    def __init__(self, routine: Any, framework: str) -> None:
        self.routine = routine
        self._framework = framework

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> CustomPredictor:
        qualified = options.prediction_class or ""
        found = import_class(qualified)
        from_path = getattr(found, "from_path", None)
        if not callable(from_path):
            raise ModelLoadError(f"{qualified} has no from_path(cls, model_dir) class method.")
        try:
            routine = from_path(str(model_dir))
        except Exception as err:
            raise ModelLoadError(f"{qualified}.from_path failed: {type(err).__name__}: {err}") from None
        if not callable(getattr(routine, "predict", None)):
            raise ModelLoadError(f"{qualified}.from_path returned an object without a predict method.")
        return cls(routine, options.framework_hint or CUSTOM)

    @property
    def detected_framework(self) -> str:
        return self._framework

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        return Prepared(len(instances), instances, kwargs=kwargs)

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        results = []
        for prepared in batch:
            try:
                result = self.routine.predict(prepared.data, **prepared.kwargs)
            except TypeError as err:
                raise PredictionError(f"Prediction failed: TypeError: {err}") from None
            if hasattr(result, "tolist"):
                result = result.tolist()
            if not isinstance(result, (list, tuple)):
                raise PredictionError(
                    f"The prediction routine returned a {type(result).__name__}; it must return a list.", status=500
                )
            results.append(list(result))
        return results


PREDICTOR = CustomPredictor
