"""Where a finished training job left a model to deploy: its ``trainingOutput`` when a kind
reports one, else the usual export folders under its job directory (local ones only: listing
a bucket on every page view would make the page as slow as the bucket)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlengine.errors import MLEngineError
from mlengine.storage import uris

#: Model files → the framework a version of them declares.
MODEL_FILES = {"saved_model.pb": "TENSORFLOW", "model.joblib": "SCIKIT_LEARN", "model.pkl": "SCIKIT_LEARN",
               "model.bst": "XGBOOST", "model.pt": "PYTORCH", "model.pt2": "PYTORCH"}
CANDIDATES = ("", "model", "export", "saved_model", "output")


def _model_dir(directory: Path) -> tuple[Path, str] | None:
    for name, framework in MODEL_FILES.items():
        if (directory / name).is_file():
            return directory, framework
    # TensorFlow's exporters write <export>/<timestamp>/saved_model.pb: the newest one
    stamped = sorted((d for d in directory.iterdir() if d.is_dir() and d.name.isdigit()), reverse=True)
    for d in stamped[:3]:
        if (d / "saved_model.pb").is_file():
            return d, "TENSORFLOW"
    return None


def find_export(job: dict[str, Any]) -> dict[str, str] | None:
    """``{"uri", "framework"}`` of the model a job exported, or None."""
    output = job.get("trainingOutput") or {}
    for key in ("exportUri", "modelUri"):
        if isinstance(output.get(key), str):
            return {"uri": output[key], "framework": ""}
    job_dir = (job.get("trainingInput") or {}).get("jobDir")
    if not isinstance(job_dir, str) or not uris.is_local(job_dir):
        return None
    try:
        root = uris.local_path(job_dir)
        for sub in CANDIDATES:
            directory = root / sub if sub else root
            if directory.is_dir():
                found = _model_dir(directory)
                if found:
                    return {"uri": str(found[0]), "framework": found[1]}
    except (OSError, ValueError, MLEngineError):
        return None
    return None
