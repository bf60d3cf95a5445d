"""The service kinds a server knows: built in, plus ``MLE_SERVICE_KINDS`` entries loaded by
dotted path (``package.module:Class``, each class constructed with the server's
:class:`~mlengine.services.ServiceContext`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from mlengine.core.plugins import load_plugin
from mlengine.errors import invalid
from mlengine.services._base import ServiceContext, ServiceKind

KIND_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


class ServiceRegistry:
    """Kinds by name. Read-only once the server runs (thread-safe for readers)."""

    def __init__(self, kinds: Iterable[ServiceKind] = ()) -> None:
        self._kinds: dict[str, ServiceKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: ServiceKind) -> None:
        name = getattr(kind, "name", None)
        if not isinstance(name, str) or not KIND_NAME_RE.match(name):
            raise ValueError(f"service kind {type(kind).__name__} needs a name of lowercase letters, "
                             f"digits and '-', got {name!r}")
        if name in self._kinds:
            raise ValueError(f"service kind {name!r} is registered twice")
        self._kinds[name] = kind

    def __iter__(self) -> Iterator[ServiceKind]:
        return iter(self._kinds.values())

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def get(self, name: str) -> ServiceKind | None:
        return self._kinds.get(name)

    def require(self, name: object) -> ServiceKind:
        """The kind called ``name``; 400 naming the field ``kind`` and listing the kinds."""
        kind = self._kinds.get(name) if isinstance(name, str) else None
        if kind is not None:
            return kind
        known = ", ".join(self.names()) or "none (the server loads kinds from MLE_SERVICE_KINDS)"
        if not isinstance(name, str) or not name:
            raise invalid("kind", f"is required; this server's service kinds: {known}")
        raise invalid("kind", f"unknown service kind {name!r}; this server's service kinds: {known}")


def load_service_kind(path: str, context: ServiceContext) -> ServiceKind:
    """Construct the :class:`ServiceKind` class at ``package.module:Class`` with ``context``."""
    plugin: ServiceKind = load_plugin(path, ServiceKind, "MLE_SERVICE_KINDS", context)
    return plugin
