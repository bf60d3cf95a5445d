"""The service kind interface: what makes a TensorBoard or a notebook server what it is. The
manager (:mod:`mlengine.services.manager`) and the proxy (:mod:`mlengine.services.proxy`) know
no kind.

Contract
--------
A :class:`ServiceKind` is constructed once per server with a :class:`ServiceContext` and is
stateless with respect to services: everything about one service is in its row (the spec the
kind validated) and in the :class:`ServiceInstance` the manager hands over. Its methods are
called from API threads (:meth:`~ServiceKind.validate`) and from the manager's thread (the
rest), so they must be thread-safe, fast (no network, no waiting) and free of side effects
outside the instance's ``directory``.

Submission (API thread, before anything is stored):
  :meth:`ServiceKind.validate` checks the ``spec`` object of a ``Service`` body completely and
  returns it normalized (JSON-serializable; applying ``validate`` to its own result returns the
  same value). It raises :class:`~mlengine.errors.MLEngineError` (``INVALID_ARGUMENT`` naming
  the field as ``spec.<field>``, via :func:`mlengine.errors.invalid`) and leaves nothing behind.

Running (manager thread), once per process launch:
  1. :meth:`ServiceKind.command` -- argv, extra environment and working directory of the
     process for one :class:`ServiceInstance`. The process must listen on
     ``instance.host:instance.port`` (plain HTTP, 127.0.0.1 only) and serve every URL under
     ``instance.url_prefix`` (``/v1/projects/P/services/N/proxy/``) *with that prefix kept*:
     the proxy forwards the path unchanged (TensorBoard: ``--path_prefix``, Jupyter:
     ``--ServerApp.base_url``). It is started in its own session (process group), with the
     server's environment minus every ``MLE_*`` variable, plus ``env``; stdout and stderr go
     to the service's log file. It must stop on SIGTERM (SIGKILL follows after
     ``policy.stop_grace_seconds``). An ``MLEngineError`` here fails the service with its
     message.
  2. :meth:`ServiceKind.health_path` -- the path (under the prefix, with a query if needed)
     the manager GETs to decide that the process is healthy; :meth:`ServiceKind.healthy` judges
     the status code (default: 2xx or 3xx).
  3. :meth:`ServiceKind.policy` -- the timings and limits the manager applies to the service
     (:class:`ServicePolicy`: start timeout, health-check cadence, restart limit and backoff,
     idle timeout, stop grace). A pure function of the spec; the mechanism is the manager's.
  4. :meth:`ServiceKind.upstream_headers` -- the credential that makes the process reachable
     **only by the proxy**: headers the proxy adds to every request and websocket handshake it
     forwards (client-sent headers of the same names are removed first) and the manager adds
     to its health checks. Anything else on this machine (a trainer, a model replica, another
     notebook's kernel) can connect to ``127.0.0.1:port`` too, so the process must refuse a
     request without them (its health path included: the conformance suite checks it). Make a
     fresh secret in :meth:`~ServiceKind.command` with :func:`new_secret` (a 0600 file in the
     instance's directory, which every sandboxed process has hidden) and read it back here with
     :func:`read_secret`: it is asked at every launch and when a restarted server re-adopts the
     process. Not a Unix socket: Landlock scopes connecting to one only from ABI 9.
  5. :meth:`ServiceKind.last_activity` -- called only when the idle timeout has passed without
     a proxied request: use the kind itself sees (a busy notebook kernel, a running job), as
     epoch seconds, or ``None``. It may ask the process on ``instance.port`` (keep it under a
     couple of seconds, with :meth:`~ServiceKind.upstream_headers`); a later time than the
     proxy's keeps the service running.

Deletion (manager thread), once, when the process is gone and before the directory is removed:
  :meth:`ServiceKind.deleted` -- release what the kind made outside the directory for the
  service (the notebook kind revokes its owner's token), whatever route deleted it. It may use
  the store; if it raises, the deletion is retried on the next pass.

The proxy adds the kind's upstream headers, ``X-Forwarded-For``, ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` and passes ``Host`` through, so a kind's server
can build absolute URLs and check websocket origins. Requests reach it only once mlengine authenticated them; the
mlengine token (header or cookie) is removed before they are forwarded.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mlengine.config import Settings
    from mlengine.store.database import Database
    from mlengine.store.tokens import TokenRepository


#: A header name for a kind whose server has no credential scheme of its own.
UPSTREAM_KEY_HEADER = "X-Mlengine-Upstream-Key"


def new_secret(path: Path) -> str:
    """A fresh random secret, written to ``path`` (mode 0600, replacing an older one)."""
    secret = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


def read_secret(path: Path) -> str:
    """The secret :func:`new_secret` wrote, or ``""`` if there is none."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def proxy_prefix(project: str, name: str) -> str:
    """The URL prefix a service is served under (and that its process must serve)."""
    return f"/v1/projects/{project}/services/{name}/proxy/"


@dataclass(frozen=True)
class ServiceContext:
    """What a kind may use: the server's settings, its metadata store (e.g. to find the job
    whose output a TensorBoard shows) and tokens. ``db`` is ``None`` in tests that need no store."""

    settings: Settings
    db: Database | None = None
    #: The server's token repository (a kind that revokes a token must use this one, so the
    #: API's token cache sees the change at once); ``None`` in tests without one.
    tokens: TokenRepository | None = None
    #: The server's environment cache (:class:`mlengine.core.environments.EnvironmentCache`):
    #: notebook kernels get Apache Beam from it; ``None`` in tests without one.
    environments: Any = None


@dataclass(frozen=True)
class ServiceInstance:
    """One process launch of a service, as its kind sees it."""

    project: str
    name: str
    spec: Mapping[str, Any]
    #: Where the process must listen (plain HTTP).
    host: str
    port: int
    #: Every URL of the service starts with this (``/v1/projects/P/services/N/proxy/``).
    url_prefix: str
    #: A private directory of the service (kept across restarts, removed with the service).
    directory: Path


@dataclass(frozen=True)
class ServiceCommand:
    """How to start one process: ``env`` is added to the inherited environment; ``cwd``
    defaults to the instance's directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ServicePolicy:
    """How the manager treats a service (all times in seconds).

    - ``start_timeout_seconds``: a launched process that is not healthy by then has failed.
    - ``health_interval_seconds`` / ``health_timeout_seconds``: a RUNNING service is checked
      this often, each check waiting this long; ``unhealthy_after`` failed checks in a row
      mean it has failed.
    - ``max_restarts`` within ``restart_window_seconds``: a failed process is restarted after
      ``restart_backoff_seconds`` (doubled for each restart still in the window, at most
      ``max_backoff_seconds``) unless it already was restarted ``max_restarts`` times in the
      window; then the service is FAILED.
    - ``idle_timeout_seconds``: a RUNNING service with no proxied request in flight and none
      for this long is stopped (``None``: never).
    - ``stop_grace_seconds``: between SIGTERM and SIGKILL.
    """

    start_timeout_seconds: float = 60.0
    health_interval_seconds: float = 5.0
    health_timeout_seconds: float = 2.0
    unhealthy_after: int = 3
    max_restarts: int = 3
    restart_window_seconds: float = 600.0
    restart_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    idle_timeout_seconds: float | None = 3600.0
    stop_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("start_timeout_seconds", "health_interval_seconds", "health_timeout_seconds",
                     "restart_window_seconds", "stop_grace_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ServicePolicy.{name} must be a positive number, got {value!r}")
        for name in ("restart_backoff_seconds", "max_backoff_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ServicePolicy.{name} must be a number >= 0, got {value!r}")
        if self.unhealthy_after < 1 or self.max_restarts < 0:
            raise ValueError("ServicePolicy.unhealthy_after must be >= 1 and max_restarts >= 0")
        idle = self.idle_timeout_seconds
        if idle is not None and not (isinstance(idle, (int, float)) and math.isfinite(idle) and idle > 0):
            raise ValueError(f"ServicePolicy.idle_timeout_seconds must be positive or None, got {idle!r}")

    def backoff(self, recent_restarts: int) -> float:
        """Seconds to wait before the next restart, given the restarts still in the window."""
        return float(min(self.restart_backoff_seconds * (2 ** min(recent_restarts, 30)), self.max_backoff_seconds))


class ServiceKind(abc.ABC):
    """A kind of service (see the module docstring for the contract)."""

    #: The ``kind`` of a ``Service`` body: lowercase letters, digits and ``-`` (``tensorboard``).
    name: ClassVar[str]

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    @abc.abstractmethod
    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The normalized spec; ``INVALID_ARGUMENT`` naming ``spec.<field>`` if it is wrong."""

    @abc.abstractmethod
    def command(self, instance: ServiceInstance) -> ServiceCommand:
        """How to start a process that serves ``instance.url_prefix`` on ``instance.port``."""

    def health_path(self, instance: ServiceInstance) -> str:
        """The path the manager GETs to check health (default: the prefix itself)."""
        return instance.url_prefix

    def healthy(self, status: int) -> bool:
        """Whether a health check answered with ``status`` means healthy (default 2xx/3xx)."""
        return 200 <= status < 400

    def policy(self, spec: Mapping[str, Any]) -> ServicePolicy:
        """Timings and limits for a service with this (validated) spec."""
        return ServicePolicy()

    def upstream_headers(self, instance: ServiceInstance) -> dict[str, str]:
        """Headers the proxy and the health checks send to the process: the secret that keeps
        everyone else out (see the contract). Default: none, i.e. an unprotected process."""
        return {}

    def deleted(self, project: str, name: str, directory: Path) -> None:
        """The service was deleted (its process is gone, ``directory`` not yet removed)."""
        return None

    def last_activity(self, instance: ServiceInstance) -> float | None:
        """Epoch seconds of the last use only the kind can see (now: busy); default none."""
        return None
