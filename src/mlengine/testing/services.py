"""The :class:`~mlengine.services.ServiceKind` contract as a test suite every kind runs.

Subclass :class:`ServiceKindConformance` and provide two fixtures: ``service_kind_class`` (the
kind's class; the suite constructs it with a :class:`~mlengine.services.ServiceContext`, as
``MLE_SERVICE_KINDS`` does) and ``service_spec`` (a spec it accepts and can run with on this
machine); optionally ``invalid_specs``, a list of ``(spec, field)`` pairs the kind must refuse
with ``INVALID_ARGUMENT`` naming ``field`` (e.g. ``"spec.logdir"``)::

    class TestTensorBoardKind(ServiceKindConformance):
        @pytest.fixture
        def service_kind_class(self): return TensorBoardKind
        @pytest.fixture
        def service_spec(self, tmp_path): return {"logdir": str(tmp_path)}

The suite checks validation, the command for an instance, and the whole lifecycle on a real
manager and the real app (Starlette's ``TestClient``, a temporary SQLite store): the service
starts, becomes healthy, answers its health path through the authenticated proxy (and 401
without a token) and only through it (directly, without the kind's upstream headers, it is
not healthy: every local process can reach its port), stops (its process group gone), starts again and is deleted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.services import ServiceCommand, ServiceContext, ServiceInstance, ServiceKind, ServicePolicy
from mlengine.services import states as st
from mlengine.services._base import proxy_prefix
from mlengine.services.registry import KIND_NAME_RE

PROJECT = "conformance"


@dataclass
class ServiceHarness:
    """A manager and the app over a temporary store, with an admin token."""

    context: ServiceContext
    kind: ServiceKind
    manager: Any  # mlengine.services.manager.ServiceManager
    client: Any  # starlette.testclient.TestClient
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(method, path, headers={**self.auth, **kwargs.pop("headers", {})}, **kwargs)

    def service(self, name: str) -> dict[str, Any]:
        response = self.api("GET", f"/v1/projects/{PROJECT}/services/{name}")
        if response.status_code != 200:
            raise AssertionError(f"GET service {name}: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def wait_state(self, name: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        service = self.service(name)
        while service["state"] not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"service {name} is still {service['state']} after {timeout:g}s "
                                     f"(waiting for {'|'.join(states)}): {service}")
            time.sleep(0.1)
            service = self.service(name)
        return service

    def handle(self, name: str) -> dict[str, Any]:
        """The manager's durable record of the service's process."""
        handle: dict[str, Any] = self.manager.repo.get(PROJECT, name).handle
        return handle


@contextlib.contextmanager
def service_harness(kind_class: type[ServiceKind], settings: Mapping[str, Any] | None = None,
                    environments: bool = False) -> Iterator[ServiceHarness]:
    """Everything the lifecycle test needs (``settings``: overrides for ``load_settings``,
    e.g. ``service_proxy_wait_seconds``; ``environments``: give the kind the server's
    environment cache, as ``mle server`` does); deletes every service it started on exit."""
    with warnings.catch_warnings():
        # Starlette prefers httpx2 for its TestClient and warns when it falls back to httpx.
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    from mlengine.api.app import create_app
    from mlengine.config import load_settings
    from mlengine.core.iam import SERVER
    from mlengine.services.manager import ServiceManager
    from mlengine.services.registry import ServiceRegistry
    from mlengine.store.database import open_database
    from mlengine.store.iam import PolicyStore
    from mlengine.store.services import ServiceRepository
    from mlengine.store.tokens import TokenRepository

    home = Path(tempfile.mkdtemp(prefix="mle-svc-"))
    resolved = load_settings(home=home, database_url=f"sqlite:///{home / 'mlengine.db'}", **(settings or {}))
    db = open_database(resolved.resolved_database_url)
    tokens = TokenRepository(db)
    cache = None
    if environments:
        from mlengine.core.environments import EnvironmentCache
        from mlengine.jobs.sandboxing import build_confinement

        cache = EnvironmentCache(resolved.envs_dir, confinement=build_confinement(resolved))
    context = ServiceContext(resolved, db, tokens, cache)
    kind = kind_class(context)
    admin, token = tokens.create("admin")
    policies = PolicyStore(db)
    policies.add_member(SERVER, "roles/ml.admin", admin.principal)
    manager = ServiceManager(resolved, ServiceRepository(db), ServiceRegistry([kind]))
    manager.start()
    app = create_app(settings=resolved, job_service=None, token_repo=tokens, services_manager=manager,
                     policies=policies)
    app.state.server_hosts.add("testserver")  # TestClient's name for the app (api/hosts.py)
    try:
        with TestClient(app) as client:
            yield ServiceHarness(context, kind, manager, client, token)
    finally:
        for row in manager.repo.all():
            with contextlib.suppress(Exception):
                manager.delete(row.project, row.name)
        manager.stop()
        db.dispose()
        shutil.rmtree(home, ignore_errors=True)


class ServiceKindConformance:
    """Tests every service kind passes; subclasses provide ``service_kind_class`` and
    ``service_spec`` (and optionally ``invalid_specs``)."""

    @pytest.fixture
    def invalid_specs(self) -> list[tuple[dict[str, Any], str]]:
        return []

    @pytest.fixture
    def service_kind(self, service_kind_class: type[ServiceKind], tmp_path: Path) -> ServiceKind:
        from mlengine.config import load_settings

        return service_kind_class(ServiceContext(load_settings(home=tmp_path / "home")))

    def test_identity_and_policy(self, service_kind: ServiceKind, service_spec: dict[str, Any]) -> None:
        assert isinstance(service_kind.name, str) and KIND_NAME_RE.match(service_kind.name)
        policy = service_kind.policy(service_kind.validate(service_spec))
        assert isinstance(policy, ServicePolicy)

    def test_validate_normalizes(self, service_kind: ServiceKind, service_spec: dict[str, Any]) -> None:
        spec = service_kind.validate(service_spec)
        assert json.loads(json.dumps(spec)) == spec, "a validated spec must be JSON"
        assert service_kind.validate(spec) == spec, "validate must accept its own result unchanged"

    def test_refusals_name_the_field(self, service_kind: ServiceKind,
                                     invalid_specs: list[tuple[dict[str, Any], str]]) -> None:
        for spec, field in invalid_specs:
            with pytest.raises(MLEngineError) as info:
                service_kind.validate(spec)
            assert info.value.code is Code.INVALID_ARGUMENT, (spec, info.value)
            assert field in info.value.message, (spec, field, info.value.message)

    def test_command_for_an_instance(self, service_kind: ServiceKind, service_spec: dict[str, Any],
                                     tmp_path: Path) -> None:
        instance = ServiceInstance(project=PROJECT, name="svc", spec=service_kind.validate(service_spec),
                                   host="127.0.0.1", port=23456, url_prefix=proxy_prefix(PROJECT, "svc"),
                                   directory=tmp_path)
        command = service_kind.command(instance)
        assert isinstance(command, ServiceCommand)
        assert command.argv and all(isinstance(a, str) for a in command.argv)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in command.env.items())
        assert not any(k.startswith("MLE_") for k in command.env), "a service gets no mlengine settings"
        assert service_kind.health_path(instance).startswith(instance.url_prefix)

    def test_lifecycle_through_the_proxy(self, service_kind_class: type[ServiceKind],
                                         service_spec: dict[str, Any]) -> None:
        with service_harness(service_kind_class) as h:
            policy = h.kind.policy(h.kind.validate(service_spec))
            startup = policy.start_timeout_seconds + 10
            created = h.api("POST", f"/v1/projects/{PROJECT}/services",
                            json={"name": "svc", "kind": h.kind.name, "spec": service_spec})
            assert created.status_code == 200, created.text
            assert created.json()["state"] == st.STARTING
            running = h.wait_state("svc", (st.RUNNING, st.FAILED), startup)
            assert running["state"] == st.RUNNING, running.get("errorMessage")

            handle = h.handle("svc")
            instance = ServiceInstance(project=PROJECT, name="svc", spec=running["spec"], host="127.0.0.1",
                                       port=int(handle["port"]), url_prefix=running["proxyUrl"],
                                       directory=h.manager.directory(PROJECT, "svc"))
            path = h.kind.health_path(instance)
            through = h.api("GET", path)
            assert h.kind.healthy(through.status_code), (through.status_code, through.text[:500])
            anonymous = h.client.get(path)
            assert anonymous.status_code == 401
            _assert_only_the_proxy_gets_in(h.kind, instance, path)
            forged = {name: "forged" for name in h.kind.upstream_headers(instance)}
            # A client's own headers of those names are replaced by the proxy's (signed in by
            # cookie, as a browser is: the kind's header may be ``Authorization``).
            replaced = h.client.get(path, headers={**forged, "Cookie": f"mle_token={h.token}"})
            assert h.kind.healthy(replaced.status_code), (replaced.status_code, replaced.text[:500])

            stopped = h.api("POST", f"/v1/projects/{PROJECT}/services/svc:stop")
            assert stopped.status_code == 200 and stopped.json()["state"] == st.STOPPED, stopped.text
            assert stopped.json()["stopReason"] == st.StopReason.USER.value
            _assert_group_gone(int(handle["pgid"]))
            refused = h.api("GET", path)
            assert refused.status_code == 400 and refused.json()["error"]["status"] == "FAILED_PRECONDITION"

            assert h.api("POST", f"/v1/projects/{PROJECT}/services/svc:start").status_code == 200
            again = h.wait_state("svc", (st.RUNNING, st.FAILED), startup)
            assert again["state"] == st.RUNNING, again.get("errorMessage")
            pgid = int(h.handle("svc")["pgid"])
            assert h.api("DELETE", f"/v1/projects/{PROJECT}/services/svc").status_code == 200
            assert h.api("GET", f"/v1/projects/{PROJECT}/services/svc").status_code == 404
            _assert_group_gone(pgid)


def _assert_only_the_proxy_gets_in(kind: ServiceKind, instance: ServiceInstance, path: str) -> None:
    """Any local process can connect to 127.0.0.1:port: without the kind's upstream headers
    (or with wrong ones) the health path must not answer healthy; with them it must."""
    from mlengine.services.processes import probe

    headers = kind.upstream_headers(instance)
    assert headers, "upstream_headers must name the secret that keeps other local processes out"
    direct = probe(instance.port, path, 5.0)
    assert direct is None or not kind.healthy(direct), f"GET {path} without the upstream headers answered {direct}"
    wrong = probe(instance.port, path, 5.0, {name: "wrong" for name in headers})
    assert wrong is None or not kind.healthy(wrong), f"GET {path} with wrong upstream headers answered {wrong}"
    assert kind.healthy(probe(instance.port, path, 5.0, headers) or 0), "the upstream headers must let the proxy in"


def _assert_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """The process group has no live member left (zombies do not count)."""
    from mlengine.services.processes import group_alive

    deadline = time.monotonic() + timeout
    while group_alive({"pgid": pgid}, None):
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} still has live processes")
        time.sleep(0.05)
