"""Services: managed long-running processes reached through the server's authenticated proxy.

A service is an instance of a :class:`ServiceKind` (TensorBoard, JupyterLab...): the kind says
how to start and health-check its process (:mod:`._base`); the manager starts, supervises,
restarts, idles out and reconciles processes (:mod:`.manager`); the proxy forwards HTTP and
websocket traffic under ``/v1/projects/P/services/N/proxy/`` (:mod:`.proxy`); states and their
transitions live in :mod:`.states`. A conformance suite for kinds ships in
:mod:`mlengine.testing.services`.
"""

from __future__ import annotations

from mlengine.services._base import (
    ServiceCommand,
    ServiceContext,
    ServiceInstance,
    ServiceKind,
    ServicePolicy,
    proxy_prefix,
)
from mlengine.services.registry import ServiceRegistry, load_service_kind
from mlengine.services.states import ServiceState, StopReason

__all__ = ["ServiceCommand", "ServiceContext", "ServiceInstance", "ServiceKind", "ServicePolicy",
           "ServiceRegistry", "ServiceState", "StopReason", "load_service_kind", "proxy_prefix"]
