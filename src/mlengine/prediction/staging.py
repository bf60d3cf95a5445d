"""Staging a version: the long part of ``CREATE_VERSION``, run in an operation's worker process.

:func:`stage_version` copies the ``deploymentUri`` into the version's managed directory
(safely, see :mod:`mlengine.prediction.deploy`), resolves the framework, fetches the
``packageUris`` and installs them into a cached environment. It runs in a worker process of
:mod:`mlengine.jobs.operations` (its own process group), so cancelling the operation kills it
and everything it started (``uv``, package builds). It is idempotent: running it again for the
same version redoes the copy and reuses the environment cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mlengine.prediction import deploy
from mlengine.prediction.launcher import zygote_kind

#: What the serving manager asks the worker to run.
STAGE_FUNCTION = "mlengine.prediction.staging:stage_version"


def stage_payload(root: Path, spec: dict[str, Any], *, max_files: int, max_bytes: int,
                  envs_dir: Path) -> dict[str, Any]:
    """The JSON payload of :func:`stage_version` for a version's ``spec``."""
    return {
        "root": str(root), "deploymentUri": spec["deploymentUri"], "framework": spec.get("framework"),
        "predictionClass": spec.get("predictionClass"), "packageUris": list(spec.get("packageUris") or []),
        "maxFiles": max_files, "maxBytes": max_bytes, "envsDir": str(envs_dir),
    }


def stage_version(payload: dict[str, Any]) -> dict[str, Any]:
    """Copy, resolve and install (see the module docstring); returns the version's ``internal``
    record: ``root``, ``modelDir``, ``framework``, ``pythonpath``, ``zygoteKind``."""
    root = Path(payload["root"])
    root.mkdir(parents=True, exist_ok=True)
    source = deploy.inspect_source(payload["deploymentUri"], int(payload["maxFiles"]), int(payload["maxBytes"]))
    framework = deploy.resolve_framework(source, payload.get("framework"), payload.get("predictionClass"))
    model_dir = root / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    deploy.stage(source, model_dir)
    pythonpath: list[str] = []
    if payload.get("packageUris"):
        from mlengine.core.environments import EnvironmentCache
        from mlengine.storage import uris

        packages_dir = root / "packages"
        paths = [uris.fetch(uri, packages_dir) for uri in payload["packageUris"]]
        pythonpath = list(EnvironmentCache(Path(payload["envsDir"])).prepare(paths).pythonpath)
    return {"root": str(root), "modelDir": str(model_dir), "framework": framework, "pythonpath": pythonpath,
            "zygoteKind": zygote_kind(framework, payload.get("predictionClass"), source.top_level)}
