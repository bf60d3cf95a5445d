"""A notebook instance's directory as a git repository: set up when JupyterLab starts, a commit
on every save (Jupyter's ``FileContentsManager.post_save_hook``), outputs stripped by the
``nbstripout`` library (the file on disk keeps its outputs; the repository never holds them),
pushed to the instance's remote when it has one. The repository also has nbstripout as its
git *clean filter*, so commits made by hand in a terminal are stripped the same way.

Runs inside the sandboxed JupyterLab process (see :mod:`mlengine.services.kinds.notebook`),
with the plain ``git`` command; :func:`history` is also run by the server, confined the same way
(a repository's own config is user-written: ``git log`` may not run it unconfined).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("mlengine.notebook.git")

GITATTRIBUTES = "*.ipynb filter=nbstripout\n*.ipynb diff=ipynb\n"
GITIGNORE = ".ipynb_checkpoints/\n__pycache__/\n*.pyc\n"
_lock = threading.Lock()
_state: dict[str, str] = {}


def _git(root: str | Path, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def init_repository(root: str, remote: str = "") -> None:
    """Make ``root`` a git repository with the stripping filter (idempotent); ``origin`` is
    ``remote`` (removed when empty)."""
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    _state["root"], _state["remote"] = root, remote
    if not (path / ".git").exists():
        _git(path, "init", "-q", "-b", "main")
    python = shlex.quote(sys.executable)
    for key, value in (("filter.nbstripout.clean", f"{python} -m nbstripout"),
                       ("filter.nbstripout.smudge", "cat"), ("filter.nbstripout.required", "true"),
                       ("diff.ipynb.textconv", f"{python} -m nbstripout -t"),
                       ("commit.gpgsign", "false")):
        _git(path, "config", key, value)
    origin = _git(path, "remote", "get-url", "origin", check=False)
    if remote and origin.returncode != 0:
        _git(path, "remote", "add", "origin", remote)
    elif remote and origin.stdout.strip() != remote:
        _git(path, "remote", "set-url", "origin", remote)
    elif not remote and origin.returncode == 0:
        _git(path, "remote", "remove", "origin")
    for name, text in ((".gitattributes", GITATTRIBUTES), (".gitignore", GITIGNORE)):
        if not (path / name).exists():
            (path / name).write_text(text)
    if _git(path, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        _git(path, "add", ".gitattributes", ".gitignore")
        _git(path, "commit", "-q", "-m", "Notebook instance created")
        _push(path, remote)


def stripped(os_path: str | Path) -> bytes:
    """The file as the repository keeps it: a notebook without outputs and execution counts
    (``nbstripout.strip_output``, as its git filter does), any other file as it is."""
    data = Path(os_path).read_bytes()
    if not str(os_path).endswith(".ipynb"):
        return data
    import nbformat
    from nbstripout import strip_output

    notebook = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
    clean = strip_output(notebook, keep_output=False, keep_count=False, keep_id=True)
    return (nbformat.writes(clean) + "\n").encode("utf-8")


def commit_file(root: str | Path, os_path: str | Path) -> str | None:
    """Commit ``os_path`` without its outputs; the new commit's id, or None when the stripped
    content did not change. In process (one library call, three quick git commands): a save
    must not wait for interpreters the filter would start."""
    rel = str(Path(os_path).resolve().relative_to(Path(root).resolve()))
    if rel.startswith(".git/") or "/.ipynb_checkpoints/" in f"/{rel}":
        return None
    with _lock:
        blob = subprocess.run(["git", "-C", str(root), "hash-object", "-w", "--stdin"], input=stripped(os_path),
                              capture_output=True, check=True, timeout=60).stdout.decode().strip()
        current = _git(root, "rev-parse", "-q", "--verify", f"HEAD:{rel}", check=False).stdout.strip()
        if blob == current:
            return None
        _git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}")
        _git(root, "commit", "-q", "--no-verify", "-m", f"Save {rel}")
        return _git(root, "rev-parse", "HEAD").stdout.strip()


def post_save(model: dict[str, Any], os_path: str, contents_manager: Any, **kwargs: Any) -> None:
    """Jupyter's post-save hook: commit (and push) on a thread, so the server goes on serving."""
    root = _state.get("root") or str(contents_manager.root_dir)
    threading.Thread(target=_commit_and_push, args=(root, os_path), name="mle-notebook-save", daemon=True).start()


def _commit_and_push(root: str, os_path: str) -> None:
    try:
        if commit_file(root, os_path):
            _push(Path(root), _state.get("remote", ""))
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        err = getattr(exc, "stderr", "") or exc
        log.warning("mlengine: could not commit %s: %s", os_path, err)


def _push(root: Path, remote: str) -> None:
    if not remote:
        return

    def push() -> None:
        with _lock:
            done = _git(root, "push", "-q", "origin", "HEAD:refs/heads/main", check=False, timeout=120)
        if done.returncode != 0:
            log.warning("mlengine: git push to %s failed: %s", remote, done.stderr.strip())

    threading.Thread(target=push, name="mle-notebook-push", daemon=True).start()


#: ``git log`` fields, separated by the unit separator (never in a commit's fields).
LOG_FORMAT = "%H%x1f%an%x1f%aI%x1f%s"


def parse_log(text: str) -> list[dict[str, str]]:
    """The commits of ``git log --format=LOG_FORMAT`` output, newest first."""
    commits = []
    for line in text.splitlines():
        parts = line.split("\x1f")
        if len(parts) == 4:
            commits.append({"commit": parts[0], "shortCommit": parts[0][:10], "author": parts[1],
                            "time": parts[2], "message": parts[3]})
    return commits
