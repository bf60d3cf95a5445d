"""Which runtime serves a job or a version, and what its owner is told when it differs.

Contract
--------
AI Platform clients name the software a job or version needs three ways: ``runtimeVersion``
(``"2.11"``: TensorFlow 2.11 and the libraries released with it), ``pythonVersion`` (``"3.7"``)
and, for training, one of Google's pre-built images
(``masterConfig.imageUri = gcr.io/cloud-ml-public/training/pytorch-gpu.1-13``). mlengine runs
everything with the server's interpreter, so :func:`resolve` is the one place that answers
"what serves this request, and what warning goes with it":

- a *configured runtime* (``MLE_RUNTIMES``, :attr:`mlengine.config.Settings.runtime_table`)
  matching the request: its requirements are installed by uv into the job's or version's
  environment (:meth:`mlengine.core.environments.EnvironmentCache.prepare`), layered on the
  server's packages, and shadow them;
- otherwise the server's own packages, with a warning that names both sides
  ("runtimeVersion 2.11 requested; served by TensorFlow 2.21 / Python 3.11 of this server").
  No warning when the server's framework has the requested major.minor version;
- a ``pythonVersion`` (or an image's ``.pyNNN``) other than the server's interpreter always
  warns: no runtime changes the interpreter.

``MLE_RUNTIMES`` keys looked up, first match wins: for ``runtimeVersion`` V, ``"V"``; for a
pre-built image of framework F and version V, ``"F-V"`` (``tensorflow-2.11``, ``pytorch-1.13``,
``scikit-learn-1.0``, ``xgboost-1.5``), then for TensorFlow ``"V"`` (runtime 2.11 is
TensorFlow 2.11). Warnings are recorded on the resource at creation (a job's and a version's
``warnings`` field) and logged when a job's environment is prepared. Pure functions, no I/O
beyond reading installed distributions' versions; thread-safe.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from mlengine.errors import invalid

#: Framework of an image name's prefix → mlengine's name for it.
_IMAGE_FRAMEWORKS = {"tf": "tensorflow", "tf2": "tensorflow", "pytorch": "pytorch", "sklearn": "scikit-learn",
                     "xgboost": "xgboost"}
#: How a framework is named to people.
DISPLAY = {"tensorflow": "TensorFlow", "pytorch": "PyTorch", "scikit-learn": "scikit-learn", "xgboost": "XGBoost"}
#: Distributions that provide each framework, in the order they are looked for.
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "pytorch": ("torch",),
                 "scikit-learn": ("scikit-learn",), "xgboost": ("xgboost", "xgboost-cpu")}
#: Google's pre-built training images: AI Platform's (gcr.io/cloud-ml-public/training) and
#: Vertex AI's (REGION-docker.pkg.dev/vertex-ai/training), e.g. tf-cpu.2-11.py310:latest.
_IMAGE_RE = re.compile(
    r"^(?:(?:[a-z]+\.)?gcr\.io/cloud-ml-public/training|(?:[a-z0-9]+-)?docker\.pkg\.dev/vertex-ai/training)/"
    r"(?P<framework>tf2?|pytorch|sklearn|xgboost)-(?P<accelerator>cpu|gpu|xla|tpu)"
    r"\.(?P<major>\d+)-(?P<minor>\d+)(?:\.py(?P<py>\d)(?P<pyminor>\d{1,2}))?"
    r"(?::[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})?$"
)
#: Apache Beam with its Dask runner's dependencies: what preprocessing jobs and notebook kernels
#: add to the server's environment (Beam pins protobuf and pyarrow below the server's versions, so
#: it is an overlay uv builds per use, never installed beside the server: docs/preprocessing.md).
BEAM_REQUIREMENTS = ("apache-beam[dask]==2.77.0",)
_RUNTIME_VERSION_RE = re.compile(r"^\d+(\.\d+){1,2}$")
_PYTHON_VERSION_RE = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class PrebuiltImage:
    """One of Google's pre-built framework images, as named by an ``imageUri``."""

    uri: str
    framework: str  # a key of DISPLAY
    version: str  # major.minor
    accelerator: str
    python: str | None = None

    @property
    def label(self) -> str:
        python = f", Python {self.python}" if self.python else ""
        return f"{DISPLAY[self.framework]} {self.version}{python}"

    @property
    def runtime_keys(self) -> tuple[str, ...]:
        keys = [f"{self.framework}-{self.version}"]
        if self.framework == "tensorflow":
            keys.append(self.version)
        return tuple(keys)


@dataclass(frozen=True)
class RuntimeChoice:
    """What serves a request: ``runtime`` (an ``MLE_RUNTIMES`` key) and the ``requirements`` uv
    installs for it, or ``None`` and nothing (the server's packages); ``warnings`` for the user."""

    runtime: str | None = None
    requirements: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def record(self) -> dict[str, Any]:
        """What a resource stores of the choice (empty when the server serves it silently)."""
        out: dict[str, Any] = {}
        if self.runtime is not None:
            out["runtime"] = self.runtime
            out["requirements"] = list(self.requirements)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def parse_image_uri(uri: str) -> PrebuiltImage | None:
    """The pre-built image ``uri`` names, or None when it is not one of Google's."""
    match = _IMAGE_RE.match(uri.strip())
    if match is None:
        return None
    python = f"{match['py']}.{match['pyminor']}" if match["py"] else None
    return PrebuiltImage(uri, _IMAGE_FRAMEWORKS[match["framework"]], f"{match['major']}.{match['minor']}",
                         match["accelerator"], python)


def check_runtime_version(value: Any, field_name: str) -> str | None:
    """``runtimeVersion`` as clients send it (``"2.11"``); INVALID_ARGUMENT naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _RUNTIME_VERSION_RE.match(value):
        raise invalid(field_name, f"must be a runtime version like '2.11', got {value!r}")
    return value


def check_python_version(value: Any, field_name: str) -> str | None:
    """``pythonVersion`` as clients send it (``"3.7"``); INVALID_ARGUMENT naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _PYTHON_VERSION_RE.match(value):
        raise invalid(field_name, f"must be a Python version like '3.7', got {value!r}")
    return value


def server_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def installed_version(framework: str) -> str | None:
    """The server's version of ``framework`` (None when it is not installed)."""
    for dist in DISTRIBUTIONS[framework]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _major_minor(version: str) -> str:
    return ".".join(version.split("+", 1)[0].split(".")[:2])


def _served_by(framework: str, python: str) -> str:
    version = installed_version(framework)
    have = f"{DISPLAY[framework]} {_major_minor(version)}" if version else f"no {DISPLAY[framework]}"
    return f"{have} / Python {python} of this server"


def resolve(table: Mapping[str, tuple[str, ...]], *, runtime_version: str | None = None,
            python_version: str | None = None, image: PrebuiltImage | None = None,
            image_field: str = "imageUri", framework: str = "tensorflow") -> RuntimeChoice:
    """What serves a request (see the module contract); ``table`` is ``MLE_RUNTIMES``;
    ``framework`` is the one a ``runtimeVersion`` warning names (a version's, when it sets one);
    runtime versions are TensorFlow's, so only TensorFlow of the same major.minor is silent."""
    python = server_python()
    warnings: list[str] = []
    runtime: str | None = None
    if image is not None:
        runtime = next((key for key in image.runtime_keys if key in table), None)
        installed = installed_version(image.framework)
        same = installed is not None and _major_minor(installed) == image.version
        if runtime is None and not same:
            warnings.append(f"{image_field} {image.uri} ({image.label}) requested; served by "
                            f"{_served_by(image.framework, python)} (MLE_RUNTIMES has no {image.runtime_keys[0]})")
        if image.python and image.python != python and python_version is None:
            warnings.append(f"{image_field} {image.uri} has Python {image.python}; served by Python {python} "
                            "of this server")
    elif runtime_version is not None:
        runtime = runtime_version if runtime_version in table else None
        installed = installed_version(framework)
        same = (framework == "tensorflow" and installed is not None
                and _major_minor(installed) == _major_minor(runtime_version))
        if runtime is None and not same:
            warnings.append(f"runtimeVersion {runtime_version} requested; served by "
                            f"{_served_by(framework, python)} (MLE_RUNTIMES has no {runtime_version})")
    if python_version is not None and python_version != python:
        warnings.append(f"pythonVersion {python_version} requested; served by Python {python} of this server")
    requirements = tuple(table[runtime]) if runtime is not None else ()
    return RuntimeChoice(runtime, requirements, tuple(warnings))
