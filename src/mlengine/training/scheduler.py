"""The job scheduler: one thread in the control plane that moves jobs through their states.

It starts QUEUED jobs in submission order while capacity allows, prepares their Python
environment on a small worker pool, launches replicas through the executor, watches them,
enforces ``scheduling.maxRunningTime``, and carries out cancellation (SIGTERM, then SIGKILL
after a grace period). All state is in the metadata store: :meth:`Scheduler.reconcile` picks
up whatever a previous server process left behind.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from mlengine.config import Settings
from mlengine.errors import MLEngineError
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow, ReplicaRow
from mlengine.store.timeutil import as_utc, utcnow
from mlengine.training import capacity, cluster, states
from mlengine.training.executors._base import Executor, Placement, ReplicaLaunch, ReplicaStatus
from mlengine.training.logs import tail_errors
from mlengine.training.preparation import ModuleProbe, fetch_packages
from mlengine.training.runtime import JobPaths

log = logging.getLogger("mlengine.scheduler")

#: How long an idle scheduler sleeps unless woken.
IDLE_INTERVAL_SECONDS = 1.0
CHIEF_TYPES = ("master", "chief")
RANKED_TYPES = ("master", "chief", "worker")


def slots_needed(training_input: dict[str, Any]) -> int:
    """Replicas that compute (master/chief/worker); capacity itself is :mod:`.capacity`'s."""
    counts = cluster.replica_counts(training_input)
    return sum(n for t, n in counts.items() if t in RANKED_TYPES)


def describe_exit(task_name: str, status: ReplicaStatus) -> str:
    if status.state == "lost":
        return f"The replica {task_name} is gone: {status.message}."
    code = status.exit_code
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"The replica {task_name} was killed by signal {name}."
    return f"The replica {task_name} exited with a non-zero status of {code}."


class JobHook(Protocol):
    """Something that runs some jobs its own way, inside the scheduler's loop (the tuner).

    The scheduler neither starts, monitors, cancels nor reconciles a job a hook ``owns``; on
    every pass it calls ``tick`` with all active jobs (after monitoring the others, before
    starting queued ones), in the scheduler thread. ``close`` is called when it stops.
    """

    def owns(self, job: JobRow) -> bool: ...

    def tick(self, active: list[JobRow]) -> None: ...

    def close(self) -> None: ...


class Scheduler:
    def __init__(
        self, settings: Settings, repo: JobRepository, executor: Executor, env_cache: Any
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.executor = executor
        self.env_cache = env_cache
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mle-prepare")
        self._preparing: set[int] = set()
        self._lock = threading.Lock()
        self._module_probe = ModuleProbe(settings.home)
        #: Hooks that own some jobs (the tuner owns tuning jobs): see :class:`JobHook`.
        self.hooks: list[JobHook] = []
        executor.notify = self.wake

    # Lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._run, name="mle-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling. Running replicas are NOT stopped: they outlive the server."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for hook in self.hooks:
            hook.close()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = True
            try:
                busy = self.tick()
            except Exception:  # the loop must survive a bad job; the error is logged
                log.exception("scheduler tick failed")
            # With no active job only a create (which wakes us) can change anything: poll
            # rarely, so an idle scheduler doesn't compete with the predict path for the GIL.
            interval = self.settings.scheduler_interval_seconds
            self._wake.wait(interval if busy else max(interval, IDLE_INTERVAL_SECONDS))
            self._wake.clear()

    def reconcile(self) -> None:
        """Pick up jobs a previous server left in PREPARING (their preparation died with it)."""
        for job in self.repo.in_states([states.PREPARING]):
            if self._owned(job):
                continue
            if self.repo.replicas(job.id):
                self._set_state(job, states.RUNNING)
            else:
                self._release(job)
                self._set_state(job, states.QUEUED)
                self._paths(job).service_log("The server restarted while preparing; preparing again.")

    # One pass -----------------------------------------------------------------------------
    def tick(self) -> bool:
        """One pass over the active jobs; returns whether there were any."""
        jobs = self.repo.in_states(states.ACTIVE)
        for job in jobs:
            if self._owned(job):
                continue
            if job.state == states.CANCELLING:
                self._advance_cancel(job)
            elif job.state == states.RUNNING:
                self._monitor(job)
        if self.hooks:
            active = self.repo.in_states(states.ACTIVE)
            for hook in self.hooks:
                hook.tick(active)
        self._start_queued()
        return bool(jobs)

    def _owned(self, job: JobRow) -> bool:
        return any(hook.owns(job) for hook in self.hooks)

    def _paths(self, job: JobRow) -> JobPaths:
        return JobPaths.of(self.settings, job.project, job.job_id)

    def _set_state(self, job: JobRow, new: str, error: str | None = None, **internal: Any) -> JobRow:
        def change(row: JobRow) -> None:
            states.check_transition(row.state, new)
            row.state = new
            now = utcnow()
            if new == states.RUNNING and row.start_time is None:
                row.start_time = now
            if new in states.TERMINAL:
                row.end_time = now
            if error is not None:
                row.error_message = error
            if internal:
                row.internal = {**row.internal, **internal}

        row = self.repo.update(job.id, change)
        if new in states.TERMINAL:
            self._release(row)
        return row

    def _start_queued(self) -> None:
        active = self.repo.in_states(states.ACTIVE)
        if not any(j.state == states.QUEUED for j in active):
            return
        have = self.executor.capacity()
        used = capacity.total(capacity.held_by(j.internal) for j in active if j.state in states.HOLDING)
        blocked = False  # once a job must wait, later ones wait too (but impossible ones still fail)
        for job in active:
            if job.state != states.QUEUED or self._owned(job):
                continue
            max_wait = job.internal.get("maxWaitSeconds")
            created = as_utc(job.create_time)
            if max_wait and created and (utcnow() - created).total_seconds() > max_wait:
                self._fail_queued(job, states.CANCELLED,
                                  f"The job waited longer than scheduling.maxWaitTime ({max_wait:g}s) "
                                  "for capacity and was cancelled.")
                continue
            try:
                verdict = capacity.assess_for(self.executor, self.settings, job.training_input, have)
            except MLEngineError as exc:
                self._fail_queued(job, states.FAILED, exc.message)
                continue
            if verdict.never:
                self._fail_queued(job, states.FAILED, verdict.never)
                continue
            if blocked or not verdict.fits_with(used, have):
                blocked = True  # first come, first served: later jobs wait behind this one
                continue
            used = used + verdict.demand
            job = self._set_state(job, states.PREPARING, demand=verdict.demand.to_json())
            with self._lock:
                self._preparing.add(job.id)
            self._pool.submit(self._prepare_and_launch, job)

    def _fail_queued(self, job: JobRow, state: str, message: str) -> None:
        self._set_state(job, state, error=message)
        self._paths(job).service_log(message, "ERROR")

    # Preparation and launch (worker threads) ----------------------------------------------
    def _prepare_and_launch(self, job: JobRow) -> None:
        paths = self._paths(job)
        try:
            packages = fetch_packages(job, paths)
            env = self.env_cache.prepare(packages, log=paths.service_log)
            self._module_probe.check(job, env)
            current = self.repo.get_by_pk(job.id)
            if current.state != states.PREPARING:
                return  # cancelled meanwhile; the cancel path finishes it
            self._launch(current, paths, env)
        except MLEngineError as exc:
            self._finish_prepare_failure(job, paths, exc.message)
        except Exception as exc:  # an engine bug must still end the job, with a message
            log.exception("preparing job %s failed", job.job_id)
            self._finish_prepare_failure(job, paths, f"Internal error while preparing the job: {exc}")
        finally:
            with self._lock:
                self._preparing.discard(job.id)
            self.wake()

    def _finish_prepare_failure(self, job: JobRow, paths: JobPaths, message: str) -> None:
        paths.service_log(message, "ERROR")
        current = self.repo.get_by_pk(job.id)
        if current.state == states.PREPARING:
            self._set_state(current, states.FAILED, error=message)

    def _launch(self, job: JobRow, paths: JobPaths, env: Any) -> None:
        ti = job.training_input
        placement = self._place(job)
        replicas = placement.replicas
        trial = job.internal.get("trialId")
        paths.metric_file.parent.mkdir(parents=True, exist_ok=True)
        argv = cluster.trainer_argv(env.python, ti["pythonModule"], ti.get("args", []),
                                    ti.get("jobDir"), job.internal.get("hyperparameters"))
        for position, spec in enumerate(replicas):
            replica_env = {
                **env.env_vars(),
                **cluster.replica_environment(
                    job_id=job.job_id, replicas=replicas, me=spec, training_input=ti,
                    metric_file=str(paths.metric_file), trial=trial,
                ),
            }
            row = self.repo.add_replica(ReplicaRow(
                job_pk=job.id, task_name=spec.task_name, task_type=spec.task_type,
                task_index=spec.index, executor=self.executor.name, state="LAUNCHING",
                handle={"statusFile": str(paths.status_file(spec.task_name))}, exit_code=None,
                message="", start_time=utcnow(),
            ))
            handle = self.executor.launch(ReplicaLaunch(
                job_key=f"{job.project}/{job.job_id}", task_name=spec.task_name, argv=argv,
                env=replica_env, cwd=paths.workdir(spec.task_name),
                log_file=paths.log_file(spec.task_name),
                status_file=paths.status_file(spec.task_name),
                placement=placement, position=position,
            ))
            self.repo.update_replica(row.id, handle=handle, state="RUNNING")
        paths.service_log(f"Job is running: {len(replicas)} replica(s) started.")
        self._set_state(job, states.RUNNING)

    def _place(self, job: JobRow) -> Placement:
        """Reserve every replica at once; recorded before any starts, for a restarted server."""
        placement = capacity.place(self.executor, self.settings, f"{job.project}/{job.job_id}", job.training_input)
        if placement.reservation:
            reservation = placement.reservation
            self.repo.update(job.id, lambda r: setattr(r, "internal", {**r.internal, "placement": reservation}))
        return placement

    def _release(self, job: JobRow) -> None:
        capacity.release(self.executor, job.job_id, job.internal)

    # Watching running jobs ----------------------------------------------------------------
    def _poll_replicas(self, job: JobRow) -> list[tuple[ReplicaRow, ReplicaStatus]]:
        result = []
        for replica in self.repo.replicas(job.id):
            if replica.state in ("EXITED", "LOST"):
                status = ReplicaStatus("exited" if replica.state == "EXITED" else "lost",
                                       replica.exit_code, replica.message)
            elif "pid" not in replica.handle and "actor" not in replica.handle:
                # Launched but the handle was never recorded (server died mid-launch).
                status = ReplicaStatus("lost", None, "the server stopped while launching it")
            else:
                status = self.executor.poll(replica.handle)
            if status.finished and replica.state not in ("EXITED", "LOST"):
                self.repo.update_replica(
                    replica.id, state="EXITED" if status.state == "exited" else "LOST",
                    exit_code=status.exit_code, message=status.message, end_time=utcnow(),
                )
            result.append((replica, status))
        return result

    def _monitor(self, job: JobRow) -> None:
        polled = self._poll_replicas(job)
        paths = self._paths(job)
        for replica, status in polled:
            failed = status.state == "lost" or (status.state == "exited" and status.exit_code != 0)
            if failed:
                lines = tail_errors(paths.log_file(replica.task_name))
                message = describe_exit(replica.task_name, status)
                if lines:
                    message += " Last lines of its log:\n" + "\n".join(lines)
                paths.service_log(message, "ERROR")
                self._teardown(job)
                self._set_state(job, states.FAILED, error=message)
                return
        chief = next((s for r, s in polled if r.task_type in CHIEF_TYPES), None)
        if chief is not None and chief.state == "exited" and chief.exit_code == 0:
            self._teardown(job)
            paths.service_log("Job completed successfully.")
            self._set_state(job, states.SUCCEEDED)
            return
        max_running = job.internal.get("maxRunningSeconds")
        started = as_utc(job.start_time)
        if max_running and started and (utcnow() - started).total_seconds() > max_running:
            message = (f"The job ran longer than scheduling.maxRunningTime ({max_running:g}s) "
                       "and was cancelled.")
            paths.service_log(message, "ERROR")
            self._set_state(job, states.CANCELLING, error=message,
                            cancelRequestedAt=utcnow().timestamp())

    def _teardown(self, job: JobRow) -> None:
        """Stop what is left of a finished job (parameter servers never exit on their own)."""
        handles = [r.handle for r in self.repo.replicas(job.id) if "pgid" in r.handle or "actor" in r.handle]
        for handle in handles:
            self.executor.signal(handle, signal.SIGTERM)
        grace = self.settings.cancel_grace_seconds

        def reap() -> None:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not any(self.executor.group_alive(h) for h in handles):
                    return
                time.sleep(0.1)
            for h in handles:
                self.executor.signal(h, signal.SIGKILL)

        if any(self.executor.group_alive(h) for h in handles):
            threading.Thread(target=reap, name="mle-teardown", daemon=True).start()

    # Cancellation -------------------------------------------------------------------------
    def _advance_cancel(self, job: JobRow) -> None:
        with self._lock:
            preparing = job.id in self._preparing
        replicas = self.repo.replicas(job.id)
        handles = [r.handle for r in replicas if "pgid" in r.handle or "actor" in r.handle]
        if not handles:
            if not preparing:
                self._finish_cancel(job)
            return
        sent = job.internal.get("termSentAt")
        now = time.time()
        if sent is None:
            for handle in handles:
                self.executor.signal(handle, signal.SIGTERM)
            self.repo.update(job.id, lambda r: setattr(r, "internal", {**r.internal, "termSentAt": now}))
            return
        if not any(self.executor.group_alive(h) for h in handles):
            self._poll_replicas(job)
            self._finish_cancel(job)
            return
        if now - sent > self.settings.cancel_grace_seconds:
            for handle in handles:
                self.executor.signal(handle, signal.SIGKILL)

    def _finish_cancel(self, job: JobRow) -> None:
        self._paths(job).service_log("Job cancelled.")
        self._set_state(job, states.CANCELLED)
