"""The sandbox of a job's replicas, as the control plane computes it.

User code is untrusted: a replica must not read the server's home (admin token, database,
other jobs' files, the local Ray's token), its database wherever it is, the server user's
cloud and SSH credentials, or the server's environment. :func:`replica_policy` builds the
:class:`~mlengine.core.sandbox.SandboxPolicy` of one replica (the mechanism, applied by the
supervisor on the machine that runs it, is :mod:`mlengine.core.sandbox`):

- hidden: ``MLE_HOME``; the SQLite database file and its ``-wal``/``-shm``/``-journal``
  siblings; :data:`CREDENTIALS` of the server user; ``MLE_SANDBOX_HIDDEN``;
- writable: the replica's working directory and private ``HOME`` and ``TMPDIR`` (created by the
  supervisor), ``MLE_SANDBOX_WRITABLE`` (default: the system temporary directory), and what its
  kind adds (:meth:`~mlengine.jobs.kinds.JobKind.sandbox_paths`: the training kind adds its
  hypertune directory and local ``jobDir``); readable: everything else, and what the kind adds
  (the job's Python environment under ``MLE_HOME/envs``);
- a path inside a hidden one is granted only below the job's own directory, or read-only below
  ``MLE_HOME/envs``; anything else inside is dropped, and the job's log says so.

The environment a replica inherits is :data:`mlengine.core.sandbox.INHERITED_ENV` plus
``MLE_SANDBOX_ENV`` (:func:`inherited_env`); ``MLE_SANDBOX=off`` keeps the private
directories and the environment allow-list but applies no Landlock.

:func:`check_supported` runs when the server starts: with ``MLE_SANDBOX=landlock`` (the
default) and replicas on this machine (local executor, or the Ray that mlengine starts), a
kernel without Landlock stops the server with a message naming the setting, rather than
running trainers unconfined. On a remote Ray cluster each node's supervisor checks, and a
replica whose node lacks Landlock fails with that message instead of running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from mlengine.config import Settings
from mlengine.core import sandbox
from mlengine.core.environments import BuildConfinement
from mlengine.core.sandbox import SandboxPolicy
from mlengine.errors import Code, MLEngineError
from mlengine.jobs.kinds import SandboxPaths
from mlengine.jobs.paths import JobPaths

#: Credentials of the server user that replicas never read (relative to its home directory).
CREDENTIALS: tuple[str, ...] = (
    ".aws", ".azure", ".config/gcloud", ".config/gh", ".docker", ".git-credentials", ".gnupg",
    ".kube", ".netrc", ".pgpass", ".pypirc", ".ssh",
)


def sqlite_file(url: str) -> str | None:
    """The database file of a ``sqlite:///...`` URL (None for others and in-memory ones)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(str(parsed.database))


def hidden_paths(settings: Settings) -> list[str]:
    """Everything replicas may not read, in the server's terms (absolute paths)."""
    hidden = [str(settings.home)]
    db = sqlite_file(settings.resolved_database_url)
    if db:
        hidden += [db, f"{db}-wal", f"{db}-shm", f"{db}-journal"]
    home = os.path.expanduser("~")
    if home != "~":
        hidden += [os.path.join(home, name) for name in CREDENTIALS]
    hidden += list(settings.sandbox_hidden)
    return hidden


def build_confinement(settings: Settings) -> BuildConfinement | None:
    """How the server confines package builds and module probes (user code it runs itself);
    None with ``MLE_SANDBOX=off``."""
    if settings.sandbox == "off":
        return None
    return BuildConfinement(hidden=tuple(_real(p) for p in hidden_paths(settings)), inherit=inherited_env(settings))


def inherited_env(settings: Settings) -> tuple[str, ...]:
    """Names (and ``PREFIX*`` patterns) a replica inherits from its host's environment."""
    return (*sandbox.INHERITED_ENV, *settings.sandbox_env)


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _real(path: str | Path) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _screen(paths: Iterable[str], hidden: list[str], allowed_inside: list[str],
            refused: list[str]) -> tuple[str, ...]:
    """``paths`` that are outside every hidden path or inside ``allowed_inside``."""
    out: list[str] = []
    for path in paths:
        real = _real(path)
        if any(_inside(real, h) for h in hidden) and not any(_inside(real, a) for a in allowed_inside):
            refused.append(str(path))
            continue
        if real not in out:
            out.append(real)
    return tuple(out)


def replica_policy(settings: Settings, paths: JobPaths, task_name: str, workdir: Path,
                   extra: SandboxPaths, log: Callable[..., None] | None = None) -> SandboxPolicy:
    """The sandbox of replica ``task_name`` of the job at ``paths`` (see the module doc)."""
    private = (str(workdir), str(paths.home_dir(task_name)), str(paths.tmp_dir(task_name)))
    if settings.sandbox == "off":
        return SandboxPolicy(private=private, landlock=False)
    hidden = [_real(p) for p in hidden_paths(settings)]
    job_root = _real(paths.root)
    refused: list[str] = []
    readable = _screen(extra.readable, hidden, [job_root, _real(settings.envs_dir)], refused)
    writable = _screen([*settings.sandbox_writable_paths, *extra.writable], hidden, [job_root], refused)
    if refused and log is not None:
        log(f"The sandbox does not grant {', '.join(refused)} to {task_name}: inside the server's "
            "private files.", "WARNING")
    return SandboxPolicy(hidden=tuple(hidden), readable=readable, writable=writable, private=private)


def job_dir_problem(settings: Settings, path: Path) -> str | None:
    """Why replicas could not write the local directory ``path`` (None: they can)."""
    if settings.sandbox == "off":
        return None
    real = _real(path)
    if any(_inside(real, _real(h)) for h in hidden_paths(settings)):
        return f"{path} is inside the server's private files; trainers cannot write there"
    roots = settings.sandbox_writable_paths
    if not any(_inside(real, _real(root)) for root in roots):
        return (f"{path} is outside the directories trainers may write ({', '.join(roots) or 'none'}); "
                "use a directory inside one of them, or add it to MLE_SANDBOX_WRITABLE on the server")
    return None


def runs_here(settings: Settings) -> bool:
    """Whether replicas run on this machine (local executor, or the Ray mlengine starts)."""
    return settings.executor == "local" or not settings.ray_address


def check_supported(settings: Settings) -> None:
    """Refuse to start (FAILED_PRECONDITION) when trainers would run here unconfined although
    ``MLE_SANDBOX=landlock`` asks for Landlock."""
    if settings.sandbox != "landlock" or not runs_here(settings):
        return
    if sandbox.landlock_abi() < sandbox.MIN_ABI:
        raise MLEngineError(Code.FAILED_PRECONDITION, (
            f"MLE_SANDBOX=landlock (the default) confines trainers with Landlock, but "
            f"{sandbox.unavailable_reason()}. Use a kernel with Landlock, or set MLE_SANDBOX=off to run "
            "trainers unconfined (they can then read everything the server can, its admin token and "
            "database included)."))
