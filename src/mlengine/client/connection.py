"""Where the mlengine server is and which token to present.

Resolution order (the first that is set wins):

- URL: ``settings.api_url`` (``MLE_API_URL``), else the ``url`` that a running server
  recorded in ``$MLE_HOME/server.json``.
- Token: ``settings.token`` (``MLE_TOKEN``), else ``$MLE_HOME/admin_token``, which the server
  creates (mode 0600) the first time it starts.

Every failure is an :class:`~mlengine.errors.MLEngineError` that tells the user what to do.

Transport (how requests reach that URL): real HTTP by default. :func:`route_in_process` (or
:func:`register_transport`) maps a base URL to a factory of ``httpx.BaseTransport``; every
:class:`~mlengine.client.http.Client` created for that exact URL (the CLI's too, through
``MLE_API_URL``) then sends its requests through ``factory()`` instead of the network. This is
how tests and notebooks talk to a server app running inside the same process
(:mod:`mlengine.testing.inprocess`); nothing is registered unless such code asks for it, and a
URL that is not registered always uses real HTTP.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlengine.config import Settings
from mlengine.errors import Code, MLEngineError

if TYPE_CHECKING:  # httpx is imported lazily: `import mlengine.client` stays cheap
    import httpx

NO_SERVER = "No mlengine server found: run `mle server start` or set MLE_API_URL"


@dataclass(frozen=True)
class Connection:
    """The server's base URL (no trailing slash) and the bearer token to send."""

    url: str
    token: str

    def __repr__(self) -> str:  # never print the token
        return f"Connection(url={self.url!r}, token='***')"


def read_server_file(settings: Settings) -> dict[str, Any] | None:
    """The contents of ``$MLE_HOME/server.json``, or None when no server recorded itself.

    A file that cannot be parsed (a server that is writing it right now, or a damaged file)
    raises FAILED_PRECONDITION naming the file.
    """
    path = settings.server_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise MLEngineError(Code.FAILED_PRECONDITION, f"Cannot read {path}: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise MLEngineError(
            Code.FAILED_PRECONDITION, f"{path} is not valid JSON ({err}); remove it if no server is running"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise MLEngineError(Code.FAILED_PRECONDITION, f"{path} does not record a server URL")
    return data


def resolve_url(settings: Settings) -> str:
    if settings.api_url:
        return settings.api_url.rstrip("/")
    info = read_server_file(settings)
    if info is None:
        raise MLEngineError(Code.UNAVAILABLE, f"{NO_SERVER} (no {settings.server_file}).")
    return str(info["url"]).rstrip("/")


def resolve_token(settings: Settings) -> str:
    if settings.token:
        return settings.token.strip()
    path = settings.token_file
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        hint = (
            "set MLE_TOKEN to a token of that server (`mle auth create-token` on its machine)"
            if settings.api_url
            else "it is created when the server first starts (`mle server start`), or set MLE_TOKEN"
        )
        raise MLEngineError(
            Code.UNAUTHENTICATED, f"No access token: {path} does not exist; {hint}."
        ) from None
    except OSError as err:
        raise MLEngineError(
            Code.UNAUTHENTICATED, f"No access token: cannot read {path}: {err}; or set MLE_TOKEN."
        ) from None
    if not token:
        raise MLEngineError(Code.UNAUTHENTICATED, f"No access token: {path} is empty; or set MLE_TOKEN.")
    return token


def resolve(settings: Settings) -> Connection:
    """The server URL and token this process should use (see the module docstring)."""
    return Connection(resolve_url(settings), resolve_token(settings))


#: Makes the transport a new client uses for one base URL (called once per client).
TransportFactory = Callable[[], "httpx.BaseTransport"]
_transports: dict[str, TransportFactory] = {}
_transports_lock = threading.Lock()


def _base(url: str) -> str:
    return url.rstrip("/")


def register_transport(url: str, factory: TransportFactory) -> None:
    """Send the requests of every client created from now on for base URL ``url`` through
    ``factory()`` (e.g. an in-process ASGI app) instead of real HTTP. Replaces an earlier
    registration of the same URL. Clients already created keep their transport."""
    with _transports_lock:
        _transports[_base(url)] = factory


def unregister_transport(url: str) -> None:
    """Undo :func:`register_transport`: clients created for ``url`` use real HTTP again."""
    with _transports_lock:
        _transports.pop(_base(url), None)


@contextlib.contextmanager
def route_in_process(url: str, factory: TransportFactory) -> Iterator[None]:
    """:func:`register_transport` for the duration of a ``with`` block."""
    register_transport(url, factory)
    try:
        yield
    finally:
        unregister_transport(url)


def transport_for(url: str) -> httpx.BaseTransport | None:
    """A new transport for base URL ``url`` if one was registered, else None (real HTTP)."""
    with _transports_lock:
        factory = _transports.get(_base(url))
    return factory() if factory is not None else None


def machine_identity() -> tuple[str | None, str]:
    """(``/etc/machine-id`` or None, host name) of this machine, to compare with the
    ``machineId``/``hostname`` a server reports in ``GET /v1/server``."""
    machine_id: str | None = None
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine_id = Path(candidate).read_text().strip() or None
        except OSError:
            continue
        if machine_id:
            break
    return machine_id, socket.gethostname()


def same_machine(server_info: dict[str, Any]) -> bool:
    """Whether the server described by ``server_info`` runs on this machine.

    Conservative (a wrong "yes" would hand the server paths it cannot read): the host names
    must match, and so must the machine ids when both sides know theirs.
    """
    machine_id, hostname = machine_identity()
    if not server_info.get("hostname") or server_info.get("hostname") != hostname:
        return False
    server_id = server_info.get("machineId")
    if machine_id and server_id:
        return bool(server_id == machine_id)
    return True
