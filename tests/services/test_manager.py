"""The service manager against a temporary SQLite store and the toy service (real processes)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.services.toy_kind import KEY_FILE, ToyKind

from mlengine.config import Settings, load_settings
from mlengine.errors import Code, MLEngineError
from mlengine.services import ServiceContext, ServiceRegistry
from mlengine.services import states as st
from mlengine.services._base import UPSTREAM_KEY_HEADER
from mlengine.services.manager import ServiceManager
from mlengine.services.processes import GATE_EXIT_CODE, group_alive, open_gate, probe, spawn_gated
from mlengine.store.database import Database, open_database
from mlengine.store.services import ServiceRepository, ServiceRow

P = "proj"


class Env:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="mle-svc-"))
        self.settings: Settings = load_settings(home=self.home, database_url=f"sqlite:///{self.home / 'm.db'}")
        self.db: Database = open_database(self.settings.resolved_database_url)
        self.managers: list[ServiceManager] = []

    def manager(self, kind: type[ToyKind] = ToyKind) -> ServiceManager:
        registry = ServiceRegistry([kind(ServiceContext(self.settings, self.db))])
        manager = ServiceManager(self.settings, ServiceRepository(self.db), registry)
        manager.start()
        self.managers.append(manager)
        return manager

    def row(self, name: str) -> ServiceRow:
        return ServiceRepository(self.db).get(P, name)

    def wait(self, name: str, done: Callable[[ServiceRow], bool], timeout: float = 15) -> ServiceRow:
        deadline = time.monotonic() + timeout
        row = self.row(name)
        while not done(row):
            if time.monotonic() > deadline:
                raise AssertionError(f"service {name} after {timeout}s: {row.state} {row.restarts} "
                                     f"{row.error!r} {row.handle}")
            time.sleep(0.05)
            row = self.row(name)
        return row

    def wait_state(self, name: str, *states: str, timeout: float = 15) -> ServiceRow:
        return self.wait(name, lambda r: r.state in states, timeout)

    def close(self) -> None:
        """Kill every process any manager launched (also the ones a test left behind)."""
        for manager in self.managers:
            manager.stop()
        for row in ServiceRepository(self.db).all():
            pgid = row.handle.get("pgid")
            if pgid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pgid), signal.SIGKILL)
        for manager in self.managers:
            for inst in list(manager._instances.values()):
                if inst.child is not None:
                    inst.child.wait(timeout=5)
        self.db.dispose()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


def upstream_key(manager: ServiceManager, name: str) -> dict[str, str]:
    return {UPSTREAM_KEY_HEADER: (manager.directory(P, name) / KEY_FILE).read_text()}


def create(manager: ServiceManager, name: str, **spec: Any) -> ServiceRow:
    return manager.create(P, {"name": name, "kind": "toy", "spec": spec})


def test_start_becomes_healthy_with_a_durable_handle(env: Env) -> None:
    manager = env.manager()
    assert create(manager, "web").state == st.STARTING
    row = env.wait_state("web", st.RUNNING)
    handle = row.handle
    assert {"pid", "pgid", "startTicks", "port", "logFile", "launchedAt", "healthPath"} <= set(handle)
    assert handle["healthPath"] == f"/v1/projects/{P}/services/web/proxy/healthz"
    key = upstream_key(manager, "web")
    assert probe(handle["port"], handle["healthPath"], 2, key) == 200
    # Only the manager and the proxy know the key: any other local client is refused.
    assert probe(handle["port"], handle["healthPath"], 2) == 403
    assert "upstream" not in json.dumps(handle) and key[UPSTREAM_KEY_HEADER] not in json.dumps(handle)
    assert handle["wasHealthy"] is True and row.restarts == 0 and row.error == ""
    log = Path(handle["logFile"]).read_text()
    assert "mlengine: starting the toy service" in log and "toy service starting" in log
    inst = manager.lookup(P, "web")
    assert inst is not None and inst.port == handle["port"] and inst.state == st.RUNNING


def test_a_crash_is_restarted_and_counted(env: Env) -> None:
    manager = env.manager()
    create(manager, "crashy", crashAfterSeconds=1.0, maxRestarts=5)
    first = env.wait_state("crashy", st.RUNNING).handle["pid"]
    row = env.wait("crashy", lambda r: r.restarts >= 1 and r.state == st.RUNNING)
    assert row.handle["pid"] != first
    assert "exited with code 3" in row.error and "crashing on purpose" in row.error
    manager.stop_service(P, "crashy")


def test_restart_limit_fails_with_the_log(env: Env) -> None:
    manager = env.manager()
    create(manager, "loop", crashAfterSeconds=0.5, maxRestarts=1)
    row = env.wait_state("loop", st.FAILED, timeout=20)
    assert row.restarts == 1
    assert "already restarted 1 times" in row.error and "crashing on purpose" in row.error
    assert "pid" not in row.handle


def test_a_service_that_never_starts_fails_at_once(env: Env) -> None:
    manager = env.manager()
    create(manager, "broken", exitAtStart=2)
    create(manager, "sick", unhealthy=True, startTimeoutSeconds=1.0)
    broken = env.wait_state("broken", st.FAILED)
    assert broken.restarts == 0
    assert "exited with code 2 while starting" in broken.error
    assert "failing at start on purpose" in broken.error
    sick = env.wait_state("sick", st.FAILED)
    assert "did not become healthy within 1s" in sick.error and sick.restarts == 0


def test_idle_stops_and_a_request_or_start_starts_again(env: Env) -> None:
    manager = env.manager()
    create(manager, "idle", idleTimeoutSeconds=1.0)
    handle = env.wait_state("idle", st.RUNNING).handle
    inst = manager.lookup(P, "idle")
    assert inst is not None
    inst.begin_request()  # a request in flight (or an open websocket) keeps it up
    time.sleep(1.6)
    assert env.row("idle").state == st.RUNNING
    inst.end_request()
    row = env.wait_state("idle", st.STOPPED, timeout=5)
    assert row.stop_reason == st.StopReason.IDLE.value and "pid" not in row.handle
    assert not group_alive(handle, None)
    assert manager.wake_idle(inst) is True  # what a proxied request does
    env.wait_state("idle", st.RUNNING)
    manager.stop_service(P, "idle")
    assert env.row("idle").stop_reason == st.StopReason.USER.value
    assert manager.wake_idle(inst) is False  # a user's stop is undone only by :start
    assert manager.start_service(P, "idle").state == st.STARTING
    env.wait_state("idle", st.RUNNING)


def test_stop_and_delete_end_the_process_group(env: Env) -> None:
    manager = env.manager()
    create(manager, "a")
    handle = env.wait_state("a", st.RUNNING).handle
    stopped = manager.stop_service(P, "a")
    assert stopped.state == st.STOPPED and not group_alive(handle, None)
    manager.start_service(P, "a")
    handle = env.wait_state("a", st.RUNNING).handle
    manager.delete(P, "a")
    assert not group_alive(handle, None)
    with pytest.raises(MLEngineError) as info:
        env.row("a")
    assert info.value.code is Code.NOT_FOUND
    assert not manager.directory(P, "a").exists()
    with pytest.raises(MLEngineError):
        manager.start_service(P, "a")


def test_reconcile_readopts_a_live_process(env: Env) -> None:
    first = env.manager()
    create(first, "keep")
    handle = env.wait_state("keep", st.RUNNING).handle
    first.stop()  # like a server going away: the service keeps running
    assert probe(handle["port"], handle["healthPath"], 2, upstream_key(first, "keep")) == 200
    second = env.manager()
    row = env.row("keep")
    assert row.state == st.RUNNING and row.handle["pid"] == handle["pid"] and row.restarts == 0
    inst = second.lookup(P, "keep")
    assert inst is not None and inst.child is None and inst.port == handle["port"]
    assert inst.upstream == upstream_key(second, "keep"), "a re-adopted process gets its key back"
    time.sleep(1.0)  # health checks of the adopted process pass
    assert env.row("keep").state == st.RUNNING
    second.stop_service(P, "keep")  # an adopted process is stopped like an own one
    assert not group_alive(handle, None)


def test_reconcile_restarts_a_service_whose_process_died(env: Env) -> None:
    first = env.manager()
    create(first, "gone")
    handle = env.wait_state("gone", st.RUNNING).handle
    first.stop()
    os.killpg(handle["pgid"], signal.SIGKILL)
    env.managers.remove(first)
    inst = first.lookup(P, "gone")
    assert inst is not None and inst.child is not None
    inst.child.wait(timeout=5)  # reaped, as init would after the server's own kill -9
    env.manager()
    row = env.wait("gone", lambda r: r.state == st.RUNNING and r.restarts == 1)
    assert row.handle["pid"] != handle["pid"]
    assert "exited while the server was down" in row.error


def test_create_refusals_name_the_field(env: Env) -> None:
    manager = env.manager()
    cases = [
        ({"name": "bad name", "kind": "toy"}, "name"),
        ({"kind": "toy"}, "name"),
        ({"name": "a", "kind": "nope"}, "kind"),
        ({"name": "a", "kind": "toy", "spec": []}, "spec"),
        ({"name": "a", "kind": "toy", "spec": {"bogus": 1}}, "spec.bogus"),
        ({"name": "a", "kind": "toy", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        with pytest.raises(MLEngineError) as info:
            manager.create(P, body)
        assert info.value.code is Code.INVALID_ARGUMENT and f"Field: {field} " in info.value.message, body
    with pytest.raises(MLEngineError) as info:
        manager.create(P, {"name": "a", "kind": "nope"})
    assert "toy" in info.value.message  # the known kinds are listed
    assert create(manager, f"projects/{P}/services/with-hyphen").name == "with-hyphen"
    with pytest.raises(MLEngineError) as info:
        create(manager, "with-hyphen")
    assert info.value.code is Code.ALREADY_EXISTS
    with pytest.raises(MLEngineError) as info:
        manager.create("..", {"name": "staging", "kind": "toy"})  # no directory outside MLE_HOME/services
    assert info.value.code is Code.INVALID_ARGUMENT and "Field: project" in info.value.message
    assert [r.name for r in ServiceRepository(env.db).all()] == ["with-hyphen"]


def test_the_gate_holds_the_process_until_opened(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    log = tmp_path / "log"
    proc = spawn_gated(["/bin/sh", "-c", f"touch {marker}"], dict(os.environ), tmp_path, log)
    time.sleep(0.3)
    assert not marker.exists() and proc.poll() is None
    open_gate(proc)
    assert proc.wait(timeout=5) == 0 and marker.exists()
    closed = spawn_gated(["/bin/sh", "-c", f"touch {marker}.2"], dict(os.environ), tmp_path, log)
    assert closed.stdin is not None
    closed.stdin.close()  # the server died before recording the handle
    assert closed.wait(timeout=5) == GATE_EXIT_CODE and not Path(f"{marker}.2").exists()


def test_services_get_no_mle_variables(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlengine.services.processes import service_environment

    monkeypatch.setenv("MLE_TOKEN", "secret")
    environment = service_environment({"EXTRA": "1"})
    assert "MLE_TOKEN" not in environment and environment["EXTRA"] == "1"


class CleaningToy(ToyKind):
    """Records its clean-up on deletion, failing the first time."""

    calls: list[tuple[str, str, bool]] = []

    def deleted(self, project: str, name: str, directory: Path) -> None:
        CleaningToy.calls.append((project, name, directory.is_dir()))
        if len(CleaningToy.calls) == 1:
            raise RuntimeError("the store is away")


def test_the_kind_cleans_up_on_deletion_and_a_failure_is_retried(env: Env) -> None:
    CleaningToy.calls = []
    manager = env.manager(CleaningToy)
    create(manager, "gone")
    env.wait_state("gone", st.RUNNING)
    manager.stop_service(P, "gone")  # no process left: the clean-up runs on the API thread first
    manager.delete(P, "gone")
    deadline = time.monotonic() + 10
    while manager.lookup(P, "gone") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.lookup(P, "gone") is None and not manager.directory(P, "gone").exists()
    assert CleaningToy.calls == [(P, "gone", True), (P, "gone", True)], "failed once, retried, then deleted"
