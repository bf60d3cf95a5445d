"""Preparing a job before launch: fetch its packages and check its module exists.

Runs on the scheduler's preparation threads; user code only ever runs in subprocesses (the
module probe imports the user's package in a throw-away interpreter, never in the server).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from mlengine.core.environments import BuildConfinement
from mlengine.errors import Code, MLEngineError
from mlengine.jobs.paths import JobPaths
from mlengine.storage.policy import UriPolicy
from mlengine.store.models import JobRow

_PROBE = (
    "import importlib.util, sys\n"
    "try:\n    found = importlib.util.find_spec(sys.argv[1]) is not None\n"
    "except ModuleNotFoundError:\n    found = False\n"
    "sys.exit(0 if found else 3)\n"
)


def fetch_packages(job: JobRow, paths: JobPaths, policy: UriPolicy) -> list[Path]:
    """Local paths of the job's packages (remote URIs downloaded), each checked by the URI
    policy again (a symbolic link or a DNS answer may have changed since submission) and
    validated. http(s) downloads check every redirect before following it."""
    from mlengine.core.packaging import validate_package_archive
    from mlengine.storage import uris
    from mlengine.storage.policy import fetch_http

    local = []
    for i, uri in enumerate(job.input["packageUris"]):
        field = f"trainingInput.packageUris[{i}]"
        policy.check(uri, field)
        if uris.is_local(uri):
            path = uris.local_path(uri)
        elif uris.scheme(uri) in ("http", "https"):
            paths.service_log(f"Downloading {uri}")
            paths.packages_dir.mkdir(parents=True, exist_ok=True)
            name = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "package.tar.gz"
            path = fetch_http(uri, paths.packages_dir / name, policy, field)
        else:
            paths.service_log(f"Downloading {uri}")
            path = uris.fetch(uri, paths.packages_dir)
        validate_package_archive(path)
        local.append(path)
    return local


class ModuleProbe:
    """Whether ``trainingInput.pythonModule`` exists in an environment; answers are cached
    per (environment, module) since environments are immutable once built. Thread-safe."""

    def __init__(self, cwd: Path, confinement: BuildConfinement | None = None) -> None:
        self.cwd = cwd
        self.confinement = confinement
        self._known: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def check(self, job: JobRow, env: Any) -> None:
        module = job.input["pythonModule"]
        key = (env.key, module)
        with self._lock:
            found = self._known.get(key)
        if found is None:
            # Importing the package's parents runs its code: confined like a replica when the
            # server confines user code (it may read its environment, write nothing).
            cmd = [env.python, "-c", _PROBE, module]
            if self.confinement is not None:
                cmd = self.confinement.wrap(cmd, readable=[*env.pythonpath, *getattr(env, "bin_dirs", [])],
                                            writable=[])
                environ = self.confinement.environment(env.env_vars())
            else:
                environ = {**os.environ, **env.env_vars()}
            result = subprocess.run(cmd, env=environ, capture_output=True, timeout=120, cwd=str(self.cwd))
            found = result.returncode == 0
            with self._lock:
                self._known[key] = found
        if not found:
            packages = ", ".join(job.input["packageUris"])
            raise MLEngineError(
                Code.INVALID_ARGUMENT,
                f"Module {module!r} (trainingInput.pythonModule) was not found in the job's "
                f"packages ({packages}). Check --module-name and that the package contains it.",
            )
