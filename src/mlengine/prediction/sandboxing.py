"""The sandbox of a model replica, as the control plane computes it.

Custom prediction routines and pickled models are user code: a model replica gets the same
confinement as a trainer (:mod:`mlengine.jobs.sandboxing`, mechanism in
:mod:`mlengine.core.sandbox`), adapted to serving:

- hidden: the same paths as for trainers (``MLE_HOME``: admin token, database, every other
  version's files; the SQLite database wherever it is; the server user's credentials;
  ``MLE_SANDBOX_HIDDEN``);
- readable inside them: the version's own model directory (under ``MLE_HOME/models``) and its
  Python environment (``MLE_HOME/envs/<key>``); anything else the version names inside a
  hidden path is dropped;
- writable: a private ``HOME`` and ``TMPDIR`` per replica under ``MLE_HOME/serving/replicas``
  (removed when the replica ends), and ``MLE_SANDBOX_WRITABLE`` (as for trainers);
- environment: of the server's, only what trainers inherit
  (:func:`mlengine.jobs.sandboxing.inherited_env`), plus ``HOME``, ``TMPDIR`` and the version's
  ``PYTHONPATH``. Zygotes are started with that environment too, so a forked replica inherits
  nothing of the server's.

The replica enters the sandbox itself, after it opened its log and listened on its socket and
before it loads the model (or starts a thread): :func:`mlengine.prediction.replica.confine`.
``MLE_SANDBOX=off`` keeps the private directories and the environment allow-list but applies
no Landlock.

Sockets: a confined process can still *connect* to named unix sockets below hidden paths on
kernels before Landlock ABI 9, so zygotes and replicas accept connections from the control
plane's process only (:func:`mlengine.prediction.protocol.peer_pid`, ``SO_PEERCRED``): a hostile
replica cannot ask a zygote for an unconfined replica, nor talk to another version's replica.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlengine.config import Settings
from mlengine.core.sandbox import SandboxPolicy, replica_environment
from mlengine.jobs.sandboxing import hidden_paths, inherited_env

#: Where the private directories of replicas live, under ``MLE_HOME/serving``.
PRIVATE_DIR = "replicas"


def _real(path: str | Path) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def private_dirs(root: Path) -> tuple[Path, Path]:
    """``(HOME, TMPDIR)`` of the replica whose private directory is ``root``."""
    return root / "home", root / "tmp"


def _readable(settings: Settings, model_dir: str, pythonpath: Iterable[str], hidden: list[str]) -> tuple[str, ...]:
    """The version's model directory and environment directories, when they are where the
    control plane puts them (or outside every hidden path)."""
    models, envs = _real(settings.models_dir), _real(settings.envs_dir)
    out: list[str] = []
    for path in (model_dir, *pythonpath):
        real = _real(path)
        if _inside(real, envs) and real != envs:
            real = os.path.join(envs, os.path.relpath(real, envs).split(os.sep, 1)[0])  # the whole envs/<key>
        elif _inside(real, models) and real != models:
            pass
        elif any(_inside(real, h) for h in hidden):
            continue  # another version's files, the database...: never granted
        if real not in out:
            out.append(real)
    return tuple(out)


def replica_policy(settings: Settings, model_dir: str, pythonpath: Iterable[str], private: Path) -> SandboxPolicy:
    """The sandbox of one replica of the version whose model is in ``model_dir`` (see the
    module doc); ``private`` is the replica's own directory."""
    home, tmp = private_dirs(private)
    dirs = (str(home), str(tmp))
    if settings.sandbox == "off":
        return SandboxPolicy(private=dirs, landlock=False)
    hidden = [_real(p) for p in hidden_paths(settings)]
    readable = _readable(settings, model_dir, pythonpath, hidden)
    writable = tuple(_real(p) for p in settings.sandbox_writable_paths
                     if not any(_inside(_real(p), h) for h in hidden))
    return SandboxPolicy(hidden=tuple(hidden), readable=readable, writable=writable, private=dirs)


def environment(settings: Settings, private: Path, extra: Mapping[str, str] | None = None,
                host: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a replica (or a zygote) whose private directory is ``private``:
    the allow-list of the server's (``host``, default ``os.environ``), ``HOME``, ``TMPDIR``,
    then ``extra``."""
    home, tmp = private_dirs(private)
    own = {"HOME": str(home), "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1",
           **(extra or {})}
    return replica_environment(os.environ if host is None else host, own, inherited_env(settings))
