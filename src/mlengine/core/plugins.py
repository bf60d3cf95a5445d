"""Loading plug-in classes named by a setting (``package.module:Class``): job kinds
(``MLE_JOB_KINDS``), service kinds (``MLE_SERVICE_KINDS``)."""

from __future__ import annotations

import importlib
from typing import Any

from mlengine.errors import Code, MLEngineError


def load_plugin(path: str, base: type[Any], setting: str, context: Any) -> Any:
    """Construct the ``base`` subclass at ``package.module:Class`` with ``context``; every
    failure is INVALID_ARGUMENT naming ``setting`` and the entry."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{setting} entry {path!r} must look like package.module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{setting} entry {path!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{setting} entry {path!r} is not a {base.__name__} class")
    return cls(context)
