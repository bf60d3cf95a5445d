"""The ``Service`` resource (an mlengine extension of the ``ml`` v1 API): validation of a
create body and rendering of a row.

``Service`` fields: ``name`` (``projects/P/services/N``), ``kind``, ``spec`` (the kind's
object), output only: ``state``, ``stopReason`` (``IDLE`` | ``USER``, when STOPPED),
``restarts`` (automatic restarts since creation), ``errorMessage`` (why the last process
failed: the service is FAILED, or was restarted after it), ``createTime``, ``startTime`` (when
the current process became healthy), ``lastActivityTime`` (the last proxied request),
``proxyUrl`` (the path prefix it is served under).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from mlengine.core.names import validate_path_segment
from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code, MLEngineError, invalid
from mlengine.services import states
from mlengine.services._base import ServiceKind, proxy_prefix
from mlengine.services.registry import ServiceRegistry
from mlengine.store.services import ServiceRow, service_name

CREATE_FIELDS = ("name", "kind", "spec")


def service_short_name(value: Any) -> str:
    """A service name (a full ``projects/P/services/N`` is reduced to ``N``): a letter, then
    letters, digits, ``_`` or ``-`` (the rule every path segment of the API follows)."""
    if not isinstance(value, str) or not value:
        raise invalid("name", "the service name is required")
    return validate_path_segment("name", value.rsplit("/", 1)[-1])


def validate_create(body: Any, kinds: ServiceRegistry) -> tuple[str, ServiceKind, dict[str, Any]]:
    """``(name, kind, normalized spec)`` of a create body; 400 naming the field otherwise."""
    if not isinstance(body, dict):
        raise invalid("service", "the body must be a Service object with name, kind and spec")
    unknown = sorted(set(body) - set(CREATE_FIELDS))
    if unknown:
        raise invalid(unknown[0], f"unknown field; a Service is created with {', '.join(CREATE_FIELDS)}")
    name = service_short_name(body.get("name"))
    kind = kinds.require(body.get("kind"))
    spec = body.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise invalid("spec", f"must be an object (the {kind.name} service's settings)")
    normalized = kind.validate(spec)
    try:
        json.dumps(normalized)
    except (TypeError, ValueError) as exc:
        raise MLEngineError(Code.INTERNAL,
                            f"Service kind {kind.name!r} returned a spec that is not JSON: {exc}") from None
    return name, kind, normalized


def render(row: ServiceRow) -> dict[str, Any]:
    """The ``Service`` resource of a row."""
    out: dict[str, Any] = {
        "name": service_name(row.project, row.name),
        "kind": row.kind,
        "spec": row.spec,
        "state": row.state,
        "restarts": row.restarts,
        "createTime": rfc3339(row.create_time),
        "proxyUrl": proxy_prefix(row.project, row.name),
    }
    if row.state == states.STOPPED and row.stop_reason:
        out["stopReason"] = row.stop_reason
    if row.error:
        out["errorMessage"] = row.error
    since = (row.handle or {}).get("healthySince")
    if row.state == states.RUNNING and isinstance(since, (int, float)):
        out["startTime"] = rfc3339(dt.datetime.fromtimestamp(since, dt.timezone.utc))
    if row.last_activity_time is not None:
        out["lastActivityTime"] = rfc3339(row.last_activity_time)
    return out
