"""``mle local predict``: the server's prediction code, run in this process.

The model directory is inspected and its framework resolved exactly as version creation does
(:mod:`mlengine.prediction.deploy`), the predictor is loaded with the same loader a replica
uses, and the request goes through the same :class:`~mlengine.prediction.engine.Engine`, so
the bytes that come out are the bytes the server would send for that request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlengine.errors import Code, MLEngineError
from mlengine.prediction import deploy, jsonio
from mlengine.prediction.engine import Engine
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, load_predictor

LOCAL_MAX_FILES = 100_000
LOCAL_MAX_BYTES = 1 << 40


def predict_local(model_dir: Path, body: bytes, framework: str | None = None,
                  prediction_class: str | None = None) -> dict[str, Any]:
    """The server's answer to ``body`` for the model in ``model_dir``; raises on errors."""
    source = deploy.inspect_source(str(model_dir), LOCAL_MAX_FILES, LOCAL_MAX_BYTES)
    resolved = deploy.resolve_framework(source, framework, prediction_class)
    try:
        predictor = load_predictor(model_dir, resolved, LoadOptions(prediction_class, framework))
    except ModelLoadError as err:
        raise MLEngineError(Code.FAILED_PRECONDITION, f"Failed to load the model: {err}") from None
    status, payload = Engine(predictor).handle([body])[0]
    answer = jsonio.loads(payload)
    if status != 200:
        raise MLEngineError(Code.INVALID_ARGUMENT if status < 500 else Code.INTERNAL, str(answer.get("error")))
    return dict(answer)
