"""The predictor interface: one implementation per framework, chosen by name.

Contract
--------
- A :class:`Predictor` is created once per replica by :func:`load_predictor` (never in the
  control plane: loading runs user code) and then used from one thread only.
- :meth:`Predictor.prepare` validates and converts *one request's* instances. It raises
  :class:`PredictionError` with a message naming the problem (which instance, which feature
  or input, what was expected) so one bad request never spoils a batch.
- :meth:`Predictor.predict` runs the model once on several prepared requests (a micro-batch
  of requests sharing a :attr:`Prepared.key`) and returns one predictions value per request
  (a list or a numpy array with one row per instance). It may raise anything; the engine
  then retries the requests one by one to pin the failure on the right request.
- Frameworks are imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: Framework names (ml v1 ``Version.framework`` plus mlengine's ONNX and PYTORCH).
TENSORFLOW = "TENSORFLOW"
SCIKIT_LEARN = "SCIKIT_LEARN"
XGBOOST = "XGBOOST"
ONNX = "ONNX"
PYTORCH = "PYTORCH"
CUSTOM = "CUSTOM"
FRAMEWORKS = (TENSORFLOW, SCIKIT_LEARN, XGBOOST, ONNX, PYTORCH)

_MODULES = {
    TENSORFLOW: "mlengine.prediction.frameworks.tensorflow_savedmodel",
    SCIKIT_LEARN: "mlengine.prediction.frameworks.scikit_learn",
    XGBOOST: "mlengine.prediction.frameworks.xgboost_booster",
    ONNX: "mlengine.prediction.frameworks.onnx_runtime",
    PYTORCH: "mlengine.prediction.frameworks.torch_export",  # model.pt2, else TorchScript's model.pt
    CUSTOM: "mlengine.prediction.frameworks.custom",
}

#: Files that identify a framework, in the order they are looked for.
MODEL_FILES: tuple[tuple[str, str], ...] = (
    ("saved_model.pb", TENSORFLOW),
    ("saved_model.pbtxt", TENSORFLOW),
    ("model.bst", XGBOOST),
    ("model.onnx", ONNX),
    ("model.pt2", PYTORCH),  # torch.export; before TorchScript's model.pt, which PyTorch deprecates
    ("model.pt", PYTORCH),
    ("model.joblib", SCIKIT_LEARN),  # or XGBOOST: told apart when the pickle is loaded
    ("model.pkl", SCIKIT_LEARN),
    ("model.ubj", XGBOOST),  # after the pickles: a scikit-learn directory may hold a model.json
    ("model.json", XGBOOST),
)
#: Python pickles: loading one runs whatever code it names (MLE_MODEL_ALLOW_PICKLE).
PICKLE_FILES = ("model.joblib", "model.pkl")
#: XGBoost's own formats (data, not code), in the order the XGBoost predictor looks for them.
XGBOOST_NATIVE_FILES = ("model.bst", "model.ubj", "model.json")


class PredictionError(Exception):
    """A problem with a request (HTTP 400 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelLoadError(Exception):
    """The model files cannot be loaded; the message is shown as the version's errorMessage."""


@dataclass
class Prepared:
    """One request's instances, converted for the model. Requests with equal ``key`` can be
    predicted together; ``data`` is the predictor's own representation."""

    count: int
    data: Any
    key: Any = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    prediction_class: str | None = None
    framework_hint: str | None = None
    #: False: refuse Python pickles (``MLE_MODEL_ALLOW_PICKLE``).
    allow_pickle: bool = True


class Predictor(ABC):
    framework: ClassVar[str]
    #: False for predictors whose requests must each get their own model call.
    batchable: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> Predictor:
        """Load the model in ``model_dir``; raise :class:`ModelLoadError` with a clear message."""

    @abstractmethod
    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        """Validate and convert one request (see the module contract)."""

    @abstractmethod
    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        """Predictions for each prepared request of ``batch``, in order."""

    @property
    def detected_framework(self) -> str:
        """The framework to report for the version (a pickle may turn out to be XGBoost)."""
        return self.framework


def detect_framework(names: set[str]) -> str | None:
    """The framework the top-level file ``names`` of a model directory point to, or None."""
    for file_name, framework in MODEL_FILES:
        if file_name in names:
            return framework
    return None


def expected_files(framework: str) -> list[str]:
    return [name for name, fw in MODEL_FILES if fw == framework or (framework == XGBOOST and name in PICKLE_FILES)]


def pickle_file(names: set[str], framework: str) -> str | None:
    """The Python pickle a model directory with top-level file ``names`` is loaded from by
    ``framework``, or None when it is loaded from another format. Custom prediction routines
    (CUSTOM) load what they like: they are code anyway."""
    if framework == XGBOOST and names.intersection(XGBOOST_NATIVE_FILES):
        return None
    if framework in (SCIKIT_LEARN, XGBOOST):
        return next((name for name in PICKLE_FILES if name in names), None)
    return None


def pickle_refused(file_name: str) -> str:
    """Why ``file_name`` is not loaded when ``MLE_MODEL_ALLOW_PICKLE`` is off."""
    return (f"{file_name} is a Python pickle, which runs code when it is loaded, and this server accepts no "
            "pickles (MLE_MODEL_ALLOW_PICKLE=false). Export the model in a data format instead: ONNX "
            "(model.onnx), a TensorFlow SavedModel, or XGBoost's own format (Booster.save_model to model.json "
            "or model.ubj)")


def load_predictor(model_dir: Path, framework: str, options: LoadOptions | None = None) -> Predictor:
    """Load the predictor of ``framework`` (or CUSTOM when ``options.prediction_class``)."""
    options = options or LoadOptions()
    name = CUSTOM if options.prediction_class else framework
    module_name = _MODULES.get(name)
    if module_name is None:
        raise ModelLoadError(f"Unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # the framework itself is not installed
        raise ModelLoadError(f"Framework {name} is not available on this server: {err}") from None
    predictor_class: type[Predictor] = module.PREDICTOR
    return predictor_class.load(model_dir, options)


def describe_instance_error(index: int, problem: str) -> PredictionError:
    return PredictionError(f"Instance {index}: {problem}")
