"""The ``notebook`` service kind: a JupyterLab server per notebook instance.

- Files: the instance's notebooks live in its *disk*, ``MLE_HOME/notebooks/<project>/<name>``
  (outside the service's own directory, so deleting the service keeps them unless asked: see
  :func:`disk_dir`); it is a git repository where every save is committed with outputs stripped
  (:mod:`mlengine.services.kinds.notebook_git`, the Jupyter ``post_save_hook``).
- Sandbox: JupyterLab, its kernels and terminals run under the replicas' Landlock sandbox
  (:mod:`mlengine.core.confined`): the server's home, database and credentials are hidden; the
  disk, the service directory (with a private ``HOME`` and ``TMPDIR``), a local git remote and
  ``MLE_SANDBOX_WRITABLE`` (as for trainers) are writable; the environment is an allow-list
  (never the server's ``MLE_*``).
- Kernels: a ``python3`` kernel spec in the service directory gives them ``MLE_API_URL``,
  ``MLE_PROJECT``, ``MLE_NOTEBOOK`` and ``MLE_TOKEN``: the token the notebooks API minted for
  the instance's owner (:data:`TOKEN_FILE`, written before the service is created).
- Only the proxy reaches it: Jupyter's own token is on, fresh at every start
  (:data:`JUPYTER_TOKEN_FILE`, 0600 in the service directory, which every other sandboxed
  process has hidden), and the proxy sends it (:meth:`NotebookKind.upstream_headers`). Another
  process on this machine that connects to its port (a trainer, another notebook's kernel) can
  neither list nor start kernels. Deleting the service by any route revokes the owner's token
  (:meth:`NotebookKind.deleted`).
- Idle: :meth:`NotebookKind.last_activity` sees busy kernels, kernel and terminal
  ``last_activity`` (Jupyter Server's ``/api/kernels`` and ``/api/terminals``) and jobs
  labelled ``mlengine-notebook: <name>`` (what ``%mle jobs submit`` adds): active ones, and
  the end of the last one (the idle time counts from it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.core.runtimes import BEAM_REQUIREMENTS
from mlengine.errors import MLEngineError, invalid
from mlengine.services._base import (
    ServiceCommand,
    ServiceInstance,
    ServiceKind,
    ServicePolicy,
    new_secret,
    read_secret,
)

log = logging.getLogger("mlengine.services")

#: The owner's token, written by the notebooks API into the service directory (mode 0600).
TOKEN_FILE = "owner_token"
#: Jupyter's own token, fresh at every start; only the proxy (and the kind) send it.
JUPYTER_TOKEN_FILE = "jupyter_token"
#: The server URL kernels reach it at, written next to it (the server's address may change).
URL_FILE = "api_url"
#: Label of jobs a notebook submitted (``%mle jobs submit`` adds it).
JOB_LABEL = "mlengine-notebook"
DEFAULT_IDLE_SECONDS = 3 * 3600.0
_FIELDS = ("idleTimeoutSeconds", "gitRemote", "owner")


def owner_token_name(project: str, name: str) -> str:
    """The name of the owner's token the notebooks API mints for an instance."""
    digest = hashlib.sha256(f"{project}/{name}".encode()).hexdigest()[:12]
    return f"notebook-{name[:40]}-{digest}"


def disk_dir(settings: Settings, project: str, name: str) -> Path:
    """The instance's persistent notebook directory."""
    return Path(settings.home) / "notebooks" / project / name


def _local_remote(remote: str) -> str | None:
    """The directory of a ``file://`` or plain-path git remote (the sandbox must let git write it)."""
    if remote.startswith("file://"):
        return remote[len("file://"):]
    return remote if remote.startswith("/") else None


class NotebookKind(ServiceKind):
    name = "notebook"

    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, Mapping):
            raise invalid("spec", "must be an object")
        for key in spec:
            if key not in _FIELDS:
                raise invalid(f"spec.{key}", f"unknown field; a notebook takes {', '.join(_FIELDS)}")
        out: dict[str, Any] = {}
        idle = spec.get("idleTimeoutSeconds", DEFAULT_IDLE_SECONDS)
        if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle < 0 or idle != idle:
            raise invalid("spec.idleTimeoutSeconds", "must be a number of seconds >= 0 (0: never stop when idle)")
        out["idleTimeoutSeconds"] = float(idle)
        remote = spec.get("gitRemote", "")
        if not isinstance(remote, str) or len(remote) > 2048 or any(c in remote for c in "\n\r\0"):
            raise invalid("spec.gitRemote", "must be a git URL or an absolute path")
        if remote and not (remote.startswith(("https://", "http://", "ssh://", "git@", "file://", "/"))):
            raise invalid("spec.gitRemote", f"{remote!r} is not a git URL (https://, ssh://, git@, file:// or /path)")
        if remote.startswith("-"):
            raise invalid("spec.gitRemote", "must not start with '-'")
        out["gitRemote"] = remote
        owner = spec.get("owner", "")
        if not isinstance(owner, str) or len(owner) > 320:
            raise invalid("spec.owner", "must be an IAM member (user:NAME)")
        out["owner"] = owner
        return out

    def policy(self, spec: Mapping[str, Any]) -> ServicePolicy:
        idle = float(spec.get("idleTimeoutSeconds", DEFAULT_IDLE_SECONDS))
        return ServicePolicy(start_timeout_seconds=90.0, health_interval_seconds=5.0, health_timeout_seconds=3.0,
                             idle_timeout_seconds=idle or None, stop_grace_seconds=10.0)

    def health_path(self, instance: ServiceInstance) -> str:
        # Needs Jupyter's token (``api`` alone does not), and does not count as activity.
        return instance.url_prefix + "api/status"

    def upstream_headers(self, instance: ServiceInstance) -> dict[str, str]:
        token = read_secret(instance.directory / JUPYTER_TOKEN_FILE)
        return {"Authorization": f"token {token}"} if token else {}

    def deleted(self, project: str, name: str, directory: Path) -> None:
        """Revoke the owner's token the kernels had (whatever route deleted the instance)."""
        tokens = self.context.tokens
        if tokens is None and self.context.db is not None:
            from mlengine.store.tokens import TokenRepository

            tokens = TokenRepository(self.context.db)
        if tokens is not None:
            tokens.discard(owner_token_name(project, name))

    # The process -------------------------------------------------------------------------
    def command(self, instance: ServiceInstance) -> ServiceCommand:
        settings = self.context.settings
        root = instance.directory
        disk = disk_dir(settings, instance.project, instance.name)
        disk.mkdir(parents=True, exist_ok=True)
        home, tmp, jupyter = root / "home", root / "tmp", root / "jupyter"
        for d in (home, tmp, jupyter / "runtime", jupyter / "config", jupyter / "data"):
            d.mkdir(parents=True, exist_ok=True)
        beam_path = self._beam_pythonpath()
        self._write_kernel_spec(instance, jupyter / "share" / "kernels" / "python3", beam_path)
        new_secret(root / JUPYTER_TOKEN_FILE)
        config = root / "jupyter_server_config.py"
        config.write_text(_server_config(instance, disk, root / JUPYTER_TOKEN_FILE))
        env = {k: v for k, v in os.environ.items() if _inherited(settings, k)}
        env.update({
            "HOME": str(home), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1",
            "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_DATA_DIR": str(jupyter / "data"),
            "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"), "JUPYTER_PATH": str(jupyter / "share"),
            "IPYTHONDIR": str(home / ".ipython"), "MPLCONFIGDIR": str(home / ".matplotlib"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": _author(instance), "GIT_COMMITTER_NAME": _author(instance),
            "GIT_AUTHOR_EMAIL": "notebook@mlengine.local", "GIT_COMMITTER_EMAIL": "notebook@mlengine.local",
        })
        jupyter_argv = [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--config={config}",
            f"--ServerApp.ip={instance.host}", f"--ServerApp.port={instance.port}",
            "--ServerApp.port_retries=0", f"--ServerApp.base_url={instance.url_prefix}",
            f"--ServerApp.root_dir={disk}",
        ]
        # `env -i`: the process gets exactly the allow-listed environment, not the server's.
        argv = ["env", "-i", *(f"{k}={v}" for k, v in sorted(env.items())),
                *confined_prefix(settings, root, disk, str(instance.spec.get("gitRemote") or ""), readable=beam_path),
                *jupyter_argv]
        return ServiceCommand(argv=argv, cwd=disk)

    def _beam_pythonpath(self) -> list[str]:
        """Apache Beam for the kernels: the same cached overlay preprocessing jobs run in
        (built by uv on first use; seconds with a warm cache). Without it (no environment
        cache, or uv cannot build it, e.g. offline) kernels start without Beam, logged."""
        environments = self.context.environments
        if environments is None:
            return []
        try:
            env = environments.prepare([], requirements=BEAM_REQUIREMENTS)
        except MLEngineError as exc:
            log.warning("notebook kernels start without Apache Beam: %s", exc.message)
            return []
        return list(env.pythonpath)

    def _write_kernel_spec(self, instance: ServiceInstance, where: Path, pythonpath: Sequence[str] = ()) -> None:
        where.mkdir(parents=True, exist_ok=True)
        kernel_env = {"MLE_PROJECT": instance.project, "MLE_NOTEBOOK": instance.name}
        if pythonpath:  # kernels only: JupyterLab itself keeps the server's packages
            kernel_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        url = _read(instance.directory / URL_FILE) or self.context.settings.api_url
        token = _read(instance.directory / TOKEN_FILE)
        if url:
            kernel_env["MLE_API_URL"] = url
        if token:
            kernel_env["MLE_TOKEN"] = token
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (mlengine)", "language": "python", "env": kernel_env}
        path = where / "kernel.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f, indent=1)

    # Idleness ----------------------------------------------------------------------------
    def last_activity(self, instance: ServiceInstance) -> float | None:
        jobs = self._jobs_activity(instance)
        seen: list[float] = [jobs] if jobs is not None else []
        base = f"http://{instance.host}:{instance.port}{instance.url_prefix}"
        for what in ("api/kernels", "api/terminals"):
            items = _get_json(base + what, self.upstream_headers(instance))
            if items is None:
                continue
            for item in items:
                if what == "api/kernels" and item.get("execution_state") in ("busy", "starting"):
                    return time.time()
                when = _epoch(item.get("last_activity"))
                if when is not None:
                    seen.append(when)
        return max(seen) if seen else None

    def _jobs_activity(self, instance: ServiceInstance) -> float | None:
        """Now while a job labelled with the instance is active, else when the last one ended."""
        db = self.context.db
        if db is None:
            return None
        from sqlalchemy import or_, select

        from mlengine.jobs.lifecycle import ACTIVE
        from mlengine.store.models import JobRow

        active = [str(getattr(s, "value", s)) for s in ACTIVE]
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
        with db.session() as session:
            rows = session.execute(select(JobRow.labels, JobRow.state, JobRow.end_time).where(
                JobRow.project == instance.project, or_(JobRow.state.in_(active), JobRow.end_time >= since),
            )).all()
        ended: list[float] = []
        for labels, state, end_time in rows:
            if (labels or {}).get(JOB_LABEL) != instance.name:
                continue
            if state in active:
                return time.time()
            if end_time is not None:
                ended.append((end_time if end_time.tzinfo else end_time.replace(tzinfo=dt.timezone.utc)).timestamp())
        return max(ended) if ended else None


def confined_prefix(settings: Settings, service_dir: Path, disk: Path, remote: str = "",
                    readable: Sequence[str] = ()) -> list[str]:
    """``python -I -m mlengine.core.confined POLICY --``: what follows runs in the sandbox."""
    from mlengine.core.sandbox import SandboxPolicy
    from mlengine.jobs.sandboxing import hidden_paths

    private = (str(service_dir / "home"), str(service_dir / "tmp"))
    if settings.sandbox == "off":
        policy = SandboxPolicy(private=private, landlock=False)
    else:
        hidden = [os.path.realpath(p) for p in hidden_paths(settings)]
        # Like a trainer, also MLE_SANDBOX_WRITABLE (default: the system temporary directory),
        # so job directories the notebook's jobs write are writable from it too.
        shared = [os.path.realpath(p) for p in settings.sandbox_writable_paths]
        writable = [os.path.realpath(disk), os.path.realpath(service_dir),
                    *(p for p in shared if not any(p == h or p.startswith(h.rstrip("/") + "/") for h in hidden))]
        local = _local_remote(remote)
        if local and os.path.isdir(local):
            writable.append(os.path.realpath(local))
        # ``readable``: the kernels' Beam overlay, inside the (hidden) environment cache.
        policy = SandboxPolicy(hidden=tuple(hidden), readable=tuple(os.path.realpath(p) for p in readable),
                               writable=tuple(writable), private=private)
    return [sys.executable, "-I", "-m", "mlengine.core.confined", policy.to_json(), "--"]


def history(settings: Settings, service_dir: Path, project: str, name: str, limit: int = 100) -> list[dict[str, str]]:
    """The commits of an instance's repository, newest first (``git log`` run confined: the
    repository's config is the notebook user's)."""
    import subprocess

    from mlengine.services.kinds.notebook_git import LOG_FORMAT, parse_log

    disk = disk_dir(settings, project, name)
    if not (disk / ".git").is_dir():
        return []
    argv = [*confined_prefix(settings, service_dir, disk), "git", "-C", str(disk), "-c", "log.showSignature=false",
            "log", f"--format={LOG_FORMAT}", f"-n{int(limit)}", "--no-color"]
    env = {k: v for k, v in os.environ.items() if _inherited(settings, k)}
    env.update({"HOME": str(service_dir / "home"), "GIT_CONFIG_NOSYSTEM": "1"})
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        from mlengine.errors import Code, MLEngineError

        raise MLEngineError(Code.INTERNAL, f"git log failed in the notebook's directory: {done.stderr.strip()[-500:]}")
    return parse_log(done.stdout)


def _inherited(settings: Settings, name: str) -> bool:
    from mlengine.core.sandbox import env_allowed
    from mlengine.jobs.sandboxing import inherited_env

    return env_allowed(name, inherited_env(settings))


def _author(instance: ServiceInstance) -> str:
    owner = str(instance.spec.get("owner") or "")
    return owner.split(":", 1)[-1] or f"notebook {instance.name}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _get_json(url: str, headers: Mapping[str, str]) -> list[dict[str, Any]] | None:
    import httpx

    try:
        response = httpx.get(url, headers=dict(headers), timeout=2.0, trust_env=False)
        data = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else None


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _server_config(instance: ServiceInstance, disk: Path, token_file: Path) -> str:
    """The ``jupyter_server_config.py`` of an instance: Jupyter's token read from
    ``token_file`` (the proxy sends it; the config itself holds no secret), the git
    repository set up, every save committed."""
    remote = str(instance.spec.get("gitRemote") or "")
    return "\n".join([
        "# Written by mlengine (services/kinds/notebook.py) at every start; edits are lost.",
        "c = get_config()  # noqa: F821",
        f"c.IdentityProvider.token = open({str(token_file)!r}).read().strip()",
        "c.ServerApp.password = ''",
        "# Every request comes from the proxy with the token (which Jupyter exempts from its XSRF",
        "# check anyway); cross-site ones never get through: the proxy's cookie is SameSite=Strict.",
        "c.ServerApp.disable_check_xsrf = True",
        "c.ServerApp.allow_remote_access = True  # Host is the mlengine server's (the proxy keeps it)",
        "c.ServerApp.open_browser = False",
        "c.ServerApp.allow_root = True  # as root too: the sandbox has dropped every capability",
        "c.ServerApp.terminals_enabled = True",
        "c.LabServerApp.news_url = None  # no outbound calls",
        "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'",
        "c.FileContentsManager.post_save_hook = 'mlengine.services.kinds.notebook_git.post_save'",
        "from mlengine.services.kinds import notebook_git",
        f"notebook_git.init_repository({str(disk)!r}, {remote!r})",
        "",
    ])
