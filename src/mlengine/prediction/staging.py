"""Staging a version: the long part of ``CREATE_VERSION``, run in an operation's worker process.

:func:`stage_version` copies the ``deploymentUri`` into the version's managed directory
(safely, see :mod:`mlengine.prediction.deploy`), resolves the framework, fetches the
``packageUris`` and installs them (and the requirements of the runtime that serves its
``runtimeVersion``, ``MLE_RUNTIMES``) into a cached environment. It runs in a worker process of
:mod:`mlengine.jobs.operations` (its own process group), so cancelling the operation kills it
and everything it started (``uv``, package builds). It is idempotent: running it again for the
same version redoes the copy and reuses the environment cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mlengine.core.environments import BuildConfinement
from mlengine.prediction import deploy, specs
from mlengine.prediction.launcher import zygote_kind
from mlengine.storage.policy import UriPolicy, fetch_file

#: What the serving manager asks the worker to run.
STAGE_FUNCTION = "mlengine.prediction.staging:stage_version"


def stage_payload(root: Path, spec: dict[str, Any], *, max_files: int, max_bytes: int,
                  envs_dir: Path, uri_policy: UriPolicy | None = None, allow_pickle: bool = True,
                  confinement: BuildConfinement | None = None,
                  requirements: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The JSON payload of :func:`stage_version` for a version's ``spec``; ``uri_policy`` is
    the server's (the URIs are checked against it again when they are read), ``allow_pickle``
    its ``MLE_MODEL_ALLOW_PICKLE``, ``requirements`` its runtime's."""
    return {
        "root": str(root), "deploymentUri": spec["deploymentUri"], "framework": spec.get("framework"),
        "predictionClass": spec.get("predictionClass"), "packageUris": list(spec.get("packageUris") or []),
        "maxFiles": max_files, "maxBytes": max_bytes, "envsDir": str(envs_dir),
        "uriPolicy": uri_policy.to_json() if uri_policy is not None else None, "allowPickle": allow_pickle,
        "buildConfinement": ({"hidden": list(confinement.hidden), "inherit": list(confinement.inherit)}
                             if confinement is not None else None),
        "requirements": list(requirements),
    }


def stage_version(payload: dict[str, Any]) -> dict[str, Any]:
    """Copy, resolve and install (see the module docstring); returns the version's ``internal``
    record: ``root``, ``modelDir``, ``framework``, ``pythonpath``, ``zygoteKind``."""
    root = Path(payload["root"])
    root.mkdir(parents=True, exist_ok=True)
    policy = UriPolicy.from_json(payload["uriPolicy"]) if payload.get("uriPolicy") else None
    # Checked again: a symbolic link or a DNS answer may have changed since the version was created.
    specs.check_deployment_uri(payload["deploymentUri"], policy)
    source = deploy.inspect_source(payload["deploymentUri"], int(payload["maxFiles"]), int(payload["maxBytes"]))
    framework = deploy.resolve_framework(source, payload.get("framework"), payload.get("predictionClass"))
    if not payload.get("allowPickle", True):
        deploy.refuse_pickle(source.uri, source.top_level, framework, payload.get("predictionClass"))
    model_dir = root / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    deploy.stage(source, model_dir)
    pythonpath: list[str] = []
    if payload.get("packageUris") or payload.get("requirements"):
        from mlengine.core.environments import EnvironmentCache
        from mlengine.storage import uris

        packages_dir = root / "packages"
        paths = []
        for i, uri in enumerate(payload["packageUris"]):
            specs.check_package_uri(uri, f"packageUris[{i}]", policy)
            paths.append(uris.fetch(uri, packages_dir) if policy is None
                         else fetch_file(uri, packages_dir, policy, f"packageUris[{i}]"))
        confined = payload.get("buildConfinement")
        confinement = (BuildConfinement(tuple(confined["hidden"]), tuple(confined["inherit"]))
                       if confined else None)
        cache = EnvironmentCache(Path(payload["envsDir"]), confinement=confinement)
        pythonpath = list(cache.prepare(paths, requirements=payload.get("requirements") or ()).pythonpath)
    return {"root": str(root), "modelDir": str(model_dir), "framework": framework, "pythonpath": pythonpath,
            "zygoteKind": zygote_kind(framework, payload.get("predictionClass"), source.top_level),
            "transformFingerprint": deploy.transform_fingerprint(model_dir)}
