"""The service manager: starts, supervises, restarts, idles out and reconciles service processes.

Contract
--------
- One manager per control plane, on one thread (``mle-services``) started and stopped from the
  server's lifespan (:meth:`ServiceManager.start` reconciles first). Stopping the manager (or
  the server) never stops services: like job replicas, they outlive the server.
- The store is the truth and this process its only writer: every change of a service is made
  under that service's lock, written to the store, and mirrored in memory
  (:class:`Instance`), so the proxy routes from memory and never touches the database.
- Launch: a free 127.0.0.1 port (held until the process may bind it), then the process in its
  own session, held at a gate (:mod:`mlengine.services.processes`) until its durable handle
  (pid, start ticks, port, log file and offset, health path) is in the store.
- STARTING → RUNNING once ``GET health_path`` answers healthy (checked every tick), or a failure
  after the kind's ``start_timeout_seconds``. RUNNING services are checked every
  ``health_interval_seconds``; ``unhealthy_after`` bad checks in a row, or the process exiting,
  is a failure.
- Failure: the process group is killed; if the service was never healthy since it was last
  started (create, ``:start``, an idle wake-up) it is FAILED at once (a retry would only repeat
  a configuration error); otherwise it is restarted after a backoff unless it was already
  restarted ``max_restarts`` times within ``restart_window_seconds``, and then it is FAILED.
  ``restarts`` counts automatic restarts since creation; ``errorMessage`` keeps the reason with
  the last lines of the process's log.
- Idle: a RUNNING service with no proxied request in flight (an open websocket counts) and none
  for ``idle_timeout_seconds`` (counted from the later of the last request and the moment it
  became healthy or was re-adopted) is stopped with ``stopReason`` IDLE. The next proxied
  request starts it again (the proxy waits for it); ``:start`` does too. A service stopped with
  ``:stop`` (USER) starts again only on ``:start``.
- Stop: SIGTERM to the process group, SIGKILL after the kind's ``stop_grace_seconds``; the
  state is STOPPING (or DELETING) until the group is gone, so a server restart finishes it.
- Reconcile (server start, also after ``kill -9``): a STARTING or RUNNING service whose process
  is alive (pid *and* start ticks match) is re-adopted; a RUNNING one whose process is gone
  counts as a failure (restart or FAILED); a STARTING one is launched again (its start was
  interrupted, nothing is counted); stops and deletions in progress are finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.core.names import validate_path_segment
from mlengine.core.processes import proc_start_ticks
from mlengine.errors import Code, MLEngineError, not_found
from mlengine.jobs.ports import parse_range, reserve_ports
from mlengine.services import processes, resource
from mlengine.services import states as st
from mlengine.services._base import ServiceInstance, ServiceKind, ServicePolicy, proxy_prefix
from mlengine.services.registry import ServiceRegistry
from mlengine.storage.paths import safe_join
from mlengine.store.services import ServiceRepository, ServiceRow, service_name

log = logging.getLogger("mlengine.services")

TICK_SECONDS = 0.2
ACTIVITY_FLUSH_SECONDS = 10.0
HOST = "127.0.0.1"
#: Handle keys that survive a process: the log file and the restart history.
HISTORY_KEYS = ("logFile", "recentRestarts", "wasHealthy")


def _history(handle: dict[str, Any]) -> dict[str, Any]:
    return {k: handle[k] for k in HISTORY_KEYS if k in handle}


def _set_activity(row: ServiceRow, when: dt.datetime) -> None:
    row.last_activity_time = when


def _set_state(row: ServiceRow, state: str) -> None:
    st.check_transition(row.state, state)
    row.state = state


def _ended(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(eq=False)
class Instance:
    """This process's view of one service: the row it last wrote or read, plus what only a
    live server knows (its child process, requests in flight, recent activity)."""

    row: ServiceRow
    lock: threading.Lock = field(default_factory=threading.Lock)
    child: Any = None  # subprocess.Popen of the process, when this server launched it
    generation: int = 0  # bumped on every launch and stop: a probe of an older one is ignored
    inflight: int = 0
    last_activity: float = field(default_factory=time.monotonic)  # the idle clock
    last_request: float | None = None
    flushed_request: float | None = None
    probe_failures: int = 0
    next_probe: float = 0.0
    deleted: bool = False
    #: The kind's upstream headers for the current process (memory only: never in the store).
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.row.state

    @property
    def port(self) -> int | None:
        port = self.row.handle.get("port")
        return int(port) if port is not None else None

    def begin_request(self) -> None:
        """A proxied request (or websocket) started; pair with :meth:`end_request`."""
        self.inflight += 1
        self.last_activity = self.last_request = time.monotonic()

    def end_request(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        self.last_activity = self.last_request = time.monotonic()


class ServiceManager:
    def __init__(self, settings: Settings, repo: ServiceRepository, kinds: ServiceRegistry) -> None:
        self.settings = settings
        self.repo = repo
        self.kinds = kinds
        self._instances: dict[tuple[str, str], Instance] = {}
        self._table_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = time.monotonic()

    # Lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile what a previous server left, then supervise on a thread."""
        self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mle-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (services keep running) and record the last activity times."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self._flush_activity()
        except Exception:
            log.exception("could not record the services' last activity")

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the store itself failed; the next pass tries again
                log.exception("services pass failed")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def directory(self, project: str, name: str) -> Path:
        """The service's private directory (its log, its process's working directory);
        INVALID_ARGUMENT if the names would lead outside ``MLE_HOME/services``."""
        return safe_join(self.settings.services_dir, project, name)

    # The API (request threads) -----------------------------------------------------------------
    def create(self, project: str, body: Any) -> ServiceRow:
        """Validate and store a service, then start it (the response shows it STARTING)."""
        validate_path_segment("project", project)
        name, kind, spec = resource.validate_create(body, self.kinds)
        self.directory(project, name)  # never a directory outside MLE_HOME/services
        row = self.repo.create(project, name, kind=kind.name, spec=spec, state=st.STARTING)
        with self._table_lock:
            self._instances[(project, name)] = Instance(row)
        self.wake()
        return row

    def get(self, project: str, name: str) -> ServiceRow:
        return self.repo.get(project, name)

    def list(self, project: str, page_size: int | None, page_token: str | None) -> tuple[list[ServiceRow], str | None]:
        return self.repo.list_page(project, page_size, page_token)

    def start_service(self, project: str, name: str) -> ServiceRow:
        """Start a STOPPED or FAILED service (a fresh restart budget); a no-op if it is
        STARTING or RUNNING; waits for a stop in progress to end first."""
        inst = self._require(project, name)
        deadline = time.monotonic() + self._grace(inst) + 2
        while True:
            with inst.lock:
                if inst.deleted or inst.state == st.DELETING:
                    raise not_found(f"Service {service_name(project, name)}")
                if inst.state in (st.STOPPED, st.FAILED):
                    self._begin_start(inst)
                    break
                if inst.state in (st.STARTING, st.RUNNING):
                    break
            if time.monotonic() > deadline:
                raise MLEngineError(Code.ABORTED, f"Service {service_name(project, name)} is still stopping; "
                                    "try again in a few seconds.")
            self._pause()
        self.wake()
        return inst.row

    def stop_service(self, project: str, name: str) -> ServiceRow:
        """Stop a service (``stopReason`` USER) and wait, up to its grace period and a bit,
        for its process to be gone. A FAILED service stays FAILED."""
        inst = self._require(project, name)
        with inst.lock:
            if inst.deleted or inst.state == st.DELETING:
                raise not_found(f"Service {service_name(project, name)}")
            if inst.state in (st.STARTING, st.RUNNING):
                self._request_stop(inst, st.STOPPING, st.StopReason.USER.value)
            elif inst.state in (st.STOPPING, st.STOPPED):
                self._write(inst, lambda r: setattr(r, "stop_reason", st.StopReason.USER.value))
        self._wait(inst, lambda: inst.state != st.STOPPING, self._grace(inst) + 2)
        return inst.row

    def delete(self, project: str, name: str) -> None:
        """Stop the service's process and remove it (its directory and log included); waits,
        up to its grace period and a bit, for that to finish (the manager completes it anyway)."""
        inst = self._require(project, name)
        with inst.lock:
            if not inst.deleted and inst.state != st.DELETING:
                self._request_stop(inst, st.DELETING, "")
        self._wait(inst, lambda: inst.deleted, self._grace(inst) + 2)

    def _require(self, project: str, name: str) -> Instance:
        with self._table_lock:
            inst = self._instances.get((project, name))
        if inst is None or inst.deleted:
            raise not_found(f"Service {service_name(project, name)}")
        return inst

    def _grace(self, inst: Instance) -> float:
        return self._policy(inst).stop_grace_seconds

    def _wait(self, inst: Instance, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.wake()
            self._pause()

    @staticmethod
    def _pause() -> None:
        time.sleep(0.05)

    # The proxy (event loop: memory only, except wake_idle) ------------------------------------
    def lookup(self, project: str, name: str) -> Instance | None:
        with self._table_lock:
            inst = self._instances.get((project, name))
        return None if inst is None or inst.deleted else inst

    def wake_idle(self, inst: Instance) -> bool:
        """Start a service the manager stopped for idleness (blocks on the store: call it from
        a thread). False if it is not idle-stopped."""
        with inst.lock:
            if inst.deleted or inst.state != st.STOPPED or inst.row.stop_reason != st.StopReason.IDLE.value:
                return False
            log.info("service %s: a proxied request wakes it up", self._label(inst))
            self._begin_start(inst)
        self.wake()
        return True

    # Supervision (manager thread) -------------------------------------------------------------
    def tick(self) -> None:
        with self._table_lock:
            instances = list(self._instances.values())
        for inst in instances:
            self._step(inst)
        if time.monotonic() - self._last_flush > ACTIVITY_FLUSH_SECONDS:
            self._last_flush = time.monotonic()
            self._flush_activity()

    def _step(self, inst: Instance) -> None:
        if not inst.lock.acquire(blocking=False):
            return  # an API call is changing it; next tick
        check = None
        try:
            if not inst.deleted:
                check = self._guarded(inst, lambda: self._advance(inst))
        finally:
            inst.lock.release()
        if check is None:
            return
        generation, port, path, timeout = check
        status = processes.probe(port, path, timeout, inst.upstream)
        with inst.lock:
            if inst.generation == generation and not inst.deleted:
                self._guarded(inst, lambda: self._judge(inst, status))

    def _guarded(self, inst: Instance, step: Callable[[], Any]) -> Any:
        """Run ``step``; if it raises, the service fails with the reason (one bad service never
        stops the others)."""
        try:
            return step()
        except Exception as exc:
            log.exception("service %s: supervision step failed", self._label(inst))
            message = exc.message if isinstance(exc, MLEngineError) else f"Internal error in the service manager: {exc}"
            try:
                if inst.state not in (st.STOPPED, st.FAILED, st.STOPPING, st.DELETING):
                    self._fail(inst, message)
            except Exception:
                log.exception("service %s: could not be failed", self._label(inst))
            return None

    def _advance(self, inst: Instance) -> tuple[int, int, str, float] | None:
        """Move one service along; returns a health check to run (outside the lock) or None."""
        row = inst.row
        if row.state in (st.STOPPED, st.FAILED):
            return None
        kind = self.kinds.get(row.kind)
        policy = self._policy(inst)
        if row.state in (st.STOPPING, st.DELETING):
            self._advance_stop(inst, policy)
            return None
        if kind is None:
            self._fail(inst, f"The service kind {row.kind!r} is not available on this server "
                       f"(its kinds: {', '.join(self.kinds.names()) or 'none'}; see MLE_SERVICE_KINDS).")
            return None
        handle = row.handle
        if "pid" not in handle:  # STARTING without a process: launch when its backoff is over
            if time.time() >= float(handle.get("restartAt") or 0):
                self._launch(inst, kind)
            return None
        if not processes.is_alive(handle, inst.child):
            what = _ended(processes.exit_code(handle, inst.child))
            when = " while starting" if row.state == st.STARTING else ""
            self._failed(inst, policy, f"The {row.kind} process {what}{when}")
            return None
        path = str(handle.get("healthPath") or proxy_prefix(row.project, row.name))
        if row.state == st.STARTING:
            if time.time() - float(handle.get("launchedAt") or 0) > policy.start_timeout_seconds:
                self._failed(inst, policy, f"The {row.kind} process did not become healthy within "
                             f"{policy.start_timeout_seconds:g}s (GET {path})")
                return None
            return inst.generation, int(handle["port"]), path, min(policy.health_timeout_seconds, 1.0)
        now = time.monotonic()
        idle = policy.idle_timeout_seconds
        if idle is not None and inst.inflight == 0 and now - inst.last_activity >= idle:
            seen = kind.last_activity(self._instance(inst))  # a busy kernel, a running job...
            if seen is not None and time.time() - seen < idle:
                inst.last_activity = now - max(0.0, time.time() - seen)
                return None
            log.info("service %s: idle for %.0fs, stopping it", self._label(inst), now - inst.last_activity)
            self._request_stop(inst, st.STOPPING, st.StopReason.IDLE.value)
            return None
        if now >= inst.next_probe:
            inst.next_probe = now + policy.health_interval_seconds
            return inst.generation, int(handle["port"]), path, policy.health_timeout_seconds
        return None

    def _judge(self, inst: Instance, status: int | None) -> None:
        """Act on a health check's answer (``None``: nothing answered)."""
        kind = self.kinds.get(inst.row.kind)
        if kind is None:
            return
        healthy = status is not None and kind.healthy(status)
        policy = self._policy(inst)
        if inst.state == st.STARTING and healthy:
            def running(r: ServiceRow) -> None:
                st.check_transition(r.state, st.RUNNING)
                r.state = st.RUNNING
                r.handle = {**r.handle, "wasHealthy": True, "healthySince": time.time()}

            self._write(inst, running)
            now = time.monotonic()
            inst.last_activity = now
            inst.next_probe = now + policy.health_interval_seconds
            inst.probe_failures = 0
            log.info("service %s: running on port %s", self._label(inst), inst.port)
        elif inst.state == st.RUNNING:
            if healthy:
                inst.probe_failures = 0
                return
            inst.probe_failures += 1
            if inst.probe_failures >= policy.unhealthy_after:
                answer = f"HTTP {status}" if status is not None else "no answer"
                self._failed(inst, policy, f"The {inst.row.kind} process failed {inst.probe_failures} health "
                             f"checks in a row (GET {inst.row.handle.get('healthPath')}: {answer})")

    # Transitions (called with the service's lock held) ---------------------------------------
    def _write(self, inst: Instance, change: Callable[[ServiceRow], None]) -> ServiceRow:
        inst.row = self.repo.update(inst.row.id, change)
        return inst.row

    def _instance(self, inst: Instance) -> ServiceInstance:
        row = inst.row
        return ServiceInstance(project=row.project, name=row.name, spec=dict(row.spec), host=HOST,
                               port=int(row.handle["port"]), url_prefix=proxy_prefix(row.project, row.name),
                               directory=self.directory(row.project, row.name))

    def _policy(self, inst: Instance) -> ServicePolicy:
        kind = self.kinds.get(inst.row.kind)
        return kind.policy(inst.row.spec) if kind is not None else ServicePolicy()

    @staticmethod
    def _label(inst: Instance) -> str:
        return f"{inst.row.project}/{inst.row.name}"

    def _begin_start(self, inst: Instance) -> None:
        """STOPPED/FAILED → STARTING with a fresh restart budget (launched by the next tick)."""
        def starting(r: ServiceRow) -> None:
            st.check_transition(r.state, st.STARTING)
            r.state = st.STARTING
            r.stop_reason = ""
            r.error = ""
            r.handle = {k: v for k, v in r.handle.items() if k == "logFile"}

        self._write(inst, starting)
        inst.probe_failures = 0

    def _launch(self, inst: Instance, kind: ServiceKind) -> None:
        row = inst.row
        directory = self.directory(row.project, row.name)
        directory.mkdir(parents=True, exist_ok=True)
        log_file = directory / "service.log"
        reservation = reserve_ports(1, parse_range(self.settings.port_range))
        port = reservation.ports[0]
        child = None
        try:
            instance = ServiceInstance(project=row.project, name=row.name, spec=dict(row.spec), host=HOST,
                                       port=port, url_prefix=proxy_prefix(row.project, row.name),
                                       directory=directory)
            command = kind.command(instance)
            health = kind.health_path(instance)
            upstream = dict(kind.upstream_headers(instance))
            with open(log_file, "ab") as f:
                stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                f.write(f"--- {stamp} mlengine: starting the {kind.name} service on port {port}\n".encode())
                offset = f.tell()
            child = processes.spawn_gated(command.argv, processes.service_environment(command.env),
                                          command.cwd or directory, log_file)
            ticks = proc_start_ticks(child.pid)
            process = {"pid": child.pid, "pgid": child.pid, "startTicks": ticks[0] if ticks else None,
                       "port": port, "logFile": str(log_file), "logOffset": offset, "launchedAt": time.time(),
                       "healthPath": health}

            def launched(r: ServiceRow) -> None:
                st.check_transition(r.state, st.STARTING)
                r.state = st.STARTING
                r.handle = {**_history(r.handle), **process}

            self._write(inst, launched)  # durable before the process may run
        except BaseException:
            if child is not None:
                processes.kill_group({"pgid": child.pid}, child)
            reservation.release()
            raise
        reservation.release()
        inst.upstream = upstream
        processes.open_gate(child)
        inst.child = child
        inst.generation += 1
        inst.probe_failures = 0
        log.info("service %s: launched %s (pid %d, port %d)", self._label(inst), kind.name, child.pid, port)

    def _failed(self, inst: Instance, policy: ServicePolicy, reason: str) -> None:
        """The process failed: restart it after a backoff, or FAILED (see the contract)."""
        handle = inst.row.handle
        tail = processes.log_tail(Path(handle["logFile"]), int(handle.get("logOffset") or 0)) \
            if handle.get("logFile") else ""
        detail = reason + (f". Last lines of its log:\n{tail}" if tail else ".")
        processes.kill_group(handle, inst.child)
        inst.child = None
        inst.generation += 1
        if not handle.get("wasHealthy"):
            log.warning("service %s failed: %s", self._label(inst), reason)
            self._fail(inst, detail)
            return
        now = time.time()
        window = policy.restart_window_seconds
        recent = [t for t in handle.get("recentRestarts") or [] if now - float(t) < window]
        if len(recent) >= policy.max_restarts:
            log.warning("service %s failed after %d restarts: %s", self._label(inst), len(recent), reason)
            self._fail(inst, f"{reason}; it was already restarted {len(recent)} times within {window:g}s "
                       f"(the limit)" + (f". Last lines of its log:\n{tail}" if tail else "."))
            return
        delay = policy.backoff(len(recent))

        def restarting(r: ServiceRow) -> None:
            st.check_transition(r.state, st.STARTING)
            r.state = st.STARTING
            r.restarts = r.restarts + 1
            r.error = detail
            r.handle = {**_history(r.handle), "recentRestarts": [*recent, now], "restartAt": now + delay}

        self._write(inst, restarting)
        log.warning("service %s: %s; restarting it in %.1fs", self._label(inst), reason, delay)

    def _fail(self, inst: Instance, message: str) -> None:
        processes.kill_group(inst.row.handle, inst.child)
        inst.child = None
        inst.generation += 1

        def failed(r: ServiceRow) -> None:
            st.check_transition(r.state, st.FAILED)
            r.state = st.FAILED
            r.error = message
            r.handle = _history(r.handle)

        self._write(inst, failed)

    def _request_stop(self, inst: Instance, target: str, reason: str) -> None:
        """SIGTERM the process group and move to ``target`` (STOPPING or DELETING)."""
        handle = inst.row.handle
        if not processes.group_alive(handle, inst.child):
            self._finish_stop(inst, target, reason)
            return
        processes.signal_group(handle, signal.SIGTERM)
        inst.generation += 1

        def stopping(r: ServiceRow) -> None:
            st.check_transition(r.state, target)
            r.state = target
            r.stop_reason = reason
            r.handle = {**r.handle, "termSentAt": time.time()}

        self._write(inst, stopping)

    def _advance_stop(self, inst: Instance, policy: ServicePolicy) -> None:
        handle = inst.row.handle
        if processes.group_alive(handle, inst.child):
            sent = handle.get("termSentAt")
            if sent is None:
                self._request_stop(inst, inst.state, inst.row.stop_reason)
            elif time.time() - float(sent) > policy.stop_grace_seconds:
                processes.signal_group(handle, signal.SIGKILL)
            return
        self._finish_stop(inst, inst.state, inst.row.stop_reason)

    def _finish_stop(self, inst: Instance, target: str, reason: str) -> None:
        """The process group is gone: STOPPED, or for a deletion the row and its files go."""
        if inst.child is not None:
            inst.child.poll()
        inst.child = None
        inst.generation += 1
        if target == st.DELETING:
            kind = self.kinds.get(inst.row.kind)
            if kind is not None:  # e.g. the notebook kind revokes its owner's token, whatever the route
                try:
                    kind.deleted(inst.row.project, inst.row.name, self.directory(inst.row.project, inst.row.name))
                except Exception:
                    log.exception("service %s: its kind's clean-up failed; retrying", self._label(inst))
                    if inst.state != st.DELETING:
                        self._write(inst, functools.partial(_set_state, state=st.DELETING))
                    return
            self.repo.delete(inst.row.id)
            inst.deleted = True
            with self._table_lock:
                self._instances.pop((inst.row.project, inst.row.name), None)
            shutil.rmtree(self.directory(inst.row.project, inst.row.name), ignore_errors=True)
            log.info("service %s: deleted", self._label(inst))
            return

        def stopped(r: ServiceRow) -> None:
            st.check_transition(r.state, st.STOPPED)
            r.state = st.STOPPED
            r.stop_reason = reason
            r.handle = _history(r.handle)

        self._write(inst, stopped)
        log.info("service %s: stopped (%s)", self._label(inst), reason or "no process")

    # Restart of the server ---------------------------------------------------------------------
    def reconcile(self) -> None:
        """Load every service and take over what a previous server left (see the contract)."""
        for row in self.repo.all():
            inst = Instance(row)
            with self._table_lock:
                self._instances[(row.project, row.name)] = inst
            with inst.lock:
                self._guarded(inst, functools.partial(self._reconcile_one, inst))

    def _reconcile_one(self, inst: Instance) -> None:
        row = inst.row
        handle = row.handle
        if "pid" not in handle or row.state in (st.STOPPING, st.DELETING):
            return  # nothing launched yet, or a stop the next tick finishes
        if row.state in (st.STOPPED, st.FAILED):
            processes.kill_group(handle, None)
            return
        if processes.is_alive(handle, None):
            kind = self.kinds.get(row.kind)
            if kind is not None:
                inst.upstream = dict(kind.upstream_headers(self._instance(inst)))
            now = time.monotonic()
            inst.last_activity = now
            inst.next_probe = now
            log.info("service %s: re-adopted its %s process (pid %s, port %s)", self._label(inst), row.state,
                     handle.get("pid"), handle.get("port"))
            return
        processes.kill_group(handle, None)
        if row.state == st.STARTING:
            def relaunch(r: ServiceRow) -> None:
                r.handle = _history(r.handle)

            self._write(inst, relaunch)
            log.info("service %s: its start was interrupted by a server restart; starting it again",
                     self._label(inst))
            return
        self._failed(inst, self._policy(inst), f"The {row.kind} process exited while the server was down")

    # Activity ---------------------------------------------------------------------------------
    def _flush_activity(self) -> None:
        """Record ``lastActivityTime`` of services that saw proxied requests since the last flush."""
        with self._table_lock:
            instances = list(self._instances.values())
        for inst in instances:
            seen = inst.last_request
            if seen is None or seen == inst.flushed_request or inst.deleted:
                continue
            if not inst.lock.acquire(blocking=False):
                continue
            try:
                wall = dt.datetime.fromtimestamp(time.time() - (time.monotonic() - seen), dt.timezone.utc)
                self._write(inst, functools.partial(_set_activity, when=wall))
                inst.flushed_request = seen
            finally:
                inst.lock.release()
