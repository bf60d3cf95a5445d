"""The job scheduler: one thread in the control plane that moves jobs of every kind through
their states. It knows no kind: what a job runs comes from its :class:`~mlengine.jobs.kinds.JobKind`.

Per pass (:meth:`Scheduler.tick`), over the active jobs in submission order:

1. deadlines (``maxWaitTime`` before a job runs, ``maxRunningTime`` once it does) for every
   job, controllers' included: a job past one is cancelled with the reason (one cancel path,
   :mod:`mlengine.jobs.cancellation`);
2. CANCELLING jobs with replicas: SIGTERM, then SIGKILL after the grace period, CANCELLED when
   none is left; RUNNING jobs: poll replicas (:mod:`mlengine.jobs.replicas`) and ask the kind
   for the outcome;
3. controller kinds :meth:`~JobKind.drive` their jobs;
4. QUEUED jobs start while capacity allows (first come, first served; one that can never fit
   fails at once): plan, place, then prepare and launch on a worker thread.

Every replica runs confined (:mod:`mlengine.jobs.sandboxing`): its own ``HOME`` and ``TMPDIR``,
an allow-listed environment, and the sandbox policy the supervisor applies to the trainer.
With :class:`~mlengine.jobs.identity.JobCredentials`, the replicas of each launch get a token of
the job's service account (``MLE_TOKEN``), revoked wherever the job is released (it ended, or
is queued again for a retry) and, at start-up, for every job no longer active.

Every state change is a compare-and-set (:func:`mlengine.jobs.lifecycle.transition`): a change
that lost a race (a cancel arrived between this pass's read and its write) is a logged no-op,
and one job that raises is failed with the reason while the pass goes on.
All state is in the metadata store: :meth:`Scheduler.reconcile` picks up whatever a previous
server process left behind.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlengine.config import Settings
from mlengine.core import metrics
from mlengine.core.timeutil import as_utc, utcnow
from mlengine.errors import Code, MLEngineError
from mlengine.jobs import capacity, sandboxing
from mlengine.jobs import lifecycle as states
from mlengine.jobs.cancellation import deadline_passed, request_cancel
from mlengine.jobs.executors._base import Executor, ReplicaLaunch
from mlengine.jobs.identity import JobCredentials
from mlengine.jobs.kinds import JobKind, KindRegistry, ReplicaResult
from mlengine.jobs.logs import tail_errors
from mlengine.jobs.paths import JobPaths
from mlengine.jobs.replicas import ReplicaWatch, infrastructure_failure
from mlengine.jobs.scheduling import SchedulingState
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow, ReplicaRow

log = logging.getLogger("mlengine.scheduler")

#: How long an idle scheduler sleeps unless woken.
IDLE_INTERVAL_SECONDS = 1.0


def _holding(demand: dict[str, Any], oversubscribed: bool = False) -> Callable[[JobRow], None]:
    def record(row: JobRow) -> None:
        rest = {k: v for k, v in row.scheduling.items() if k != "oversubscribed"}
        row.scheduling = {**rest, "demand": demand, **({"oversubscribed": True} if oversubscribed else {})}

    return record


class Scheduler:
    def __init__(self, settings: Settings, repo: JobRepository, executor: Executor, kinds: KindRegistry,
                 credentials: JobCredentials | None = None) -> None:
        sandboxing.check_supported(settings)  # never run a replica unconfined by accident
        self.settings = settings
        self.repo = repo
        self.executor = executor
        self.kinds = kinds
        self.credentials = credentials
        self.replicas = ReplicaWatch(settings, repo, executor)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mle-prepare")
        # Tokens are revoked off the scheduler's path (a job's end is logged without waiting).
        self._revoker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mle-revoke")
        self._preparing: set[int] = set()
        self._lock = threading.Lock()
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
        self._revoker.shutdown(wait=True)  # quick; what is left is revoked at the next start
        for kind in self.kinds:
            kind.close()

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        """Whether the scheduling thread runs (the server's readiness, ``/readyz``)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = True
            try:
                busy = self.tick()
            except Exception:  # the store itself failed; the next pass tries again
                log.exception("scheduler pass failed")
            # With no active job only a create (which wakes us) can change anything: poll
            # rarely, so an idle scheduler doesn't compete with the predict path for the GIL.
            interval = self.settings.scheduler_interval_seconds
            self._wake.wait(interval if busy else max(interval, IDLE_INTERVAL_SECONDS))
            self._wake.clear()

    def reconcile(self) -> None:
        """Pick up jobs a previous server left in PREPARING (their preparation died with it);
        revoke the tokens of jobs that ended while no server was watching."""
        if self.credentials is not None:
            try:
                self.credentials.revoke_ended(self.repo.in_states(states.ACTIVE))
            except Exception:
                log.exception("revoking the tokens of ended jobs failed")
        for job in self.repo.in_states([states.PREPARING]):
            self._guarded(job, self._reconcile_one)

    def _reconcile_one(self, job: JobRow) -> None:
        kind = self._kind(job)
        if kind is None or kind.controller:
            return
        if self.repo.replicas(job.id):
            states.transition(self.repo, job, states.RUNNING)
            return
        self._release(job)
        if states.transition(self.repo, job, states.QUEUED,
                             change=lambda r: setattr(r, "scheduling", {**r.scheduling, "demand": None,
                                                                        "placement": None})):
            self._paths(job).service_log("The server restarted while preparing; preparing again.")

    # One pass -----------------------------------------------------------------------------
    def tick(self) -> bool:
        """One pass over the active jobs; returns whether there were any."""
        jobs = self.repo.in_states(states.ACTIVE)
        for job in jobs:
            self._guarded(job, self._step)
        controllers = self.kinds.controllers()
        if controllers:
            active = self.repo.in_states(states.ACTIVE)
            for kind in controllers:
                try:
                    kind.drive(active)
                except Exception:
                    log.exception("job kind %s: drive failed", kind.name)
        self._start_queued()
        return bool(jobs)

    def _guarded(self, job: JobRow, step: Callable[[JobRow], None]) -> None:
        """Run ``step`` for one job; if it raises, that job fails with the reason and the pass
        goes on (one bad row never stops the scheduler)."""
        try:
            step(job)
        except Exception as exc:
            self._fail_broken(job, exc)

    def _fail_broken(self, job: JobRow, exc: Exception) -> None:
        """Fail a job the scheduler could not handle, with the reason; never raises."""
        log.error("job %s/%s: scheduler step failed", job.project, job.job_id, exc_info=exc)
        message = exc.message if isinstance(exc, MLEngineError) else f"Internal error in the scheduler: {exc}"
        try:
            current = self.repo.get_by_pk(job.id)
            if current.state not in states.TERMINAL:
                self.replicas.teardown(current)
                states.transition(self.repo, current, states.FAILED, error=message)
                self._release(current)
        except Exception:
            log.exception("job %s/%s: could not be failed", job.project, job.job_id)

    def _kind(self, job: JobRow) -> JobKind | None:
        return self.kinds.get(job.kind)

    def _paths(self, job: JobRow) -> JobPaths:
        return JobPaths.of(self.settings, job.project, job.job_id)

    def _step(self, job: JobRow) -> None:
        kind = self._kind(job)
        if kind is None:
            raise MLEngineError(Code.INTERNAL, f"The job's kind {job.kind!r} is not known to this server.")
        if self._past_deadline(job, kind):
            return
        if kind.controller:
            return
        if job.state == states.CANCELLING:
            self._advance_cancel(job)
        elif job.state == states.RUNNING:
            self._monitor(job, kind)

    def _past_deadline(self, job: JobRow, kind: JobKind) -> bool:
        """Past ``maxWaitTime`` or ``maxRunningTime``, the job is cancelled with the reason."""
        message = deadline_passed(job, utcnow())
        if message is None:
            return False
        row = request_cancel(self.repo, job, message, controller=kind.controller)
        if row is not None:
            self._paths(job).service_log(message, "ERROR")
            if row.state in states.TERMINAL:
                self._release(row)
        return True

    def _set_state(self, job: JobRow, new: str, error: str | None = None,
                   change: Callable[[JobRow], None] | None = None) -> JobRow | None:
        row = states.transition(self.repo, job, new, error=error, change=change)
        if row is not None and new in states.TERMINAL:
            self._release(row)
        return row

    def _start_queued(self) -> None:
        active = self.repo.in_states(states.ACTIVE)
        if not any(j.state == states.QUEUED for j in active):
            return
        have = self.executor.capacity()
        mode = self.executor.resource_mode()
        used = capacity.total(capacity.held_by(j.scheduling) for j in active if j.state in states.HOLDING)
        blocked = False  # once a job must wait, later ones wait too (but impossible ones still fail)
        for job in active:
            kind = self._kind(job)
            if job.state != states.QUEUED or kind is None or kind.controller:
                continue
            try:
                demand = self._consider(job, kind, mode, have, used, blocked)
            except Exception as exc:  # one bad row never stops the pass: it fails alone
                self._fail_broken(job, exc)
                continue
            if demand is None:
                blocked = True  # first come, first served: later jobs wait behind this one
            elif demand is not False:
                used = used + demand

    def _consider(self, job: JobRow, kind: JobKind, mode: str, have: Any, used: Any, blocked: bool) -> Any:
        """Start ``job`` if it fits: returns what it now holds, ``None`` if it must wait, or
        ``False`` if it ended (failed, or cancelled meanwhile)."""
        try:
            requests = kind.plan(job)
        except MLEngineError as exc:
            self._fail_queued(job, exc.message)
            return False
        verdict = capacity.assess(requests, mode, have)
        if verdict.never:
            self._fail_queued(job, verdict.never)
            return False
        if blocked or not verdict.fits_with(used, have):
            return None
        moved = self._set_state(job, states.PREPARING, change=_holding(verdict.demand.to_json(), bool(verdict.alone)))
        if moved is None:
            return False  # cancelled meanwhile
        metrics.job_queue_wait(job.project, (utcnow() - (as_utc(job.create_time) or utcnow())).total_seconds())
        if verdict.alone:
            self._paths(job).service_log(verdict.alone, "WARNING")
        with self._lock:
            self._preparing.add(job.id)
        self._pool.submit(self._prepare_and_launch, moved, kind, requests)
        return verdict.demand

    def _fail_queued(self, job: JobRow, message: str) -> None:
        if self._set_state(job, states.FAILED, error=message):
            self._paths(job).service_log(message, "ERROR")

    # Preparation and launch (worker threads) ----------------------------------------------
    def _prepare_and_launch(self, job: JobRow, kind: JobKind, requests: list[Any]) -> None:
        paths = self._paths(job)
        try:
            prepared = kind.prepare(job, paths, paths.service_log)
            current = self.repo.get_by_pk(job.id)
            if current.state != states.PREPARING:
                return  # cancelled meanwhile; the cancel path finishes it
            self._launch(current, kind, requests, paths, prepared)
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

    def _launch(self, job: JobRow, kind: JobKind, requests: list[Any], paths: JobPaths, prepared: Any) -> None:
        placement = capacity.place(self.executor, self.settings, f"{job.project}/{job.job_id}", requests)
        if placement.reservation:  # recorded before any replica starts, for a restarted server
            reservation = placement.reservation
            self.repo.update(job.id, lambda r: setattr(r, "scheduling", {**r.scheduling, "placement": reservation}))
        extra = kind.sandbox_paths(job, prepared, paths)
        inherit = sandboxing.inherited_env(self.settings)
        attempt = SchedulingState.of(job.scheduling).attempt or 1
        identity = self.credentials.issue(job) if self.credentials is not None else {}
        for position, spec in enumerate(placement.replicas):
            command = kind.command(job, prepared, placement, position, paths)
            status_file = paths.status_file(spec.task_name, attempt)
            workdir = kind.workdir(job, paths, spec.task_name)
            policy = sandboxing.replica_policy(self.settings, paths, spec.task_name, workdir, extra,
                                               paths.service_log)
            env = {**command.env, **identity, "HOME": str(paths.home_dir(spec.task_name)),
                   "TMPDIR": str(paths.tmp_dir(spec.task_name))}
            row = self.repo.add_replica(ReplicaRow(
                job_pk=job.id, task_name=spec.task_name, task_type=spec.task_type,
                task_index=spec.index, executor=self.executor.name, state=states.ReplicaState.LAUNCHING.value,
                handle={"statusFile": str(status_file)}, exit_code=None,
                message="", start_time=utcnow(),
            ))
            handle = self.executor.launch(ReplicaLaunch(
                job_key=f"{job.project}/{job.job_id}", task_name=spec.task_name, argv=command.argv,
                env=env, cwd=workdir,
                log_file=paths.log_file(spec.task_name), status_file=status_file,
                placement=placement, position=position, sandbox=policy, inherit_env=inherit,
            ))
            self.repo.update_replica(row.id, handle=handle, state=states.ReplicaState.RUNNING.value)
        if self._set_state(job, states.RUNNING) is not None:
            paths.service_log(f"Job is running: {len(placement.replicas)} replica(s) started.")

    def _release(self, job: JobRow) -> None:
        capacity.release(self.executor, job.job_id, (job.scheduling or {}).get("placement"))
        if self.credentials is not None:
            with contextlib.suppress(RuntimeError):  # stopping: revoked at the next start (reconcile)
                self._revoker.submit(self._revoke, job)

    def _revoke(self, job: JobRow) -> None:
        try:
            if self.credentials is not None:
                self.credentials.revoke(job)
        except Exception:  # retried at the next start (reconcile)
            log.exception("job %s/%s: revoking its token failed", job.project, job.job_id)

    # Watching running jobs ----------------------------------------------------------------
    def _monitor(self, job: JobRow, kind: JobKind) -> None:
        polled = self.replicas.poll(job)
        results = [ReplicaResult(r.task_name, r.task_type, s) for r, s in polled]
        outcome = kind.outcome(job, results)
        if outcome is None:
            return
        paths = self._paths(job)
        if outcome.state == states.SUCCEEDED:
            if self._set_state(job, states.SUCCEEDED) is not None:
                self.replicas.teardown(job)
                paths.service_log("Job completed successfully.")
            return
        message = outcome.message
        failed = next((r for r in results if r.status.failed), None)
        if failed is not None and infrastructure_failure(failed.status) and self._retry(job, message):
            return
        if failed is not None:
            lines = tail_errors(paths.log_file(failed.task_name))
            if lines:
                message += " Last lines of its log:\n" + "\n".join(lines)
        if self._set_state(job, states.FAILED, error=message) is not None:
            paths.service_log(message, "ERROR")
            self.replicas.teardown(job)

    def _retry(self, job: JobRow, reason: str) -> bool:
        """Queue ``job`` again after an infrastructure failure if its ``maxRetries`` allows;
        its replicas are stopped and forgotten (their logs stay), its reservation released."""
        sched = SchedulingState.of(job.scheduling)
        attempt = sched.attempt or 1
        if not sched.max_retries or attempt > sched.max_retries:
            return False
        self.replicas.teardown(job)

        def again(row: JobRow) -> None:
            row.scheduling = {**row.scheduling, "attempt": attempt + 1, "demand": None, "placement": None,
                              "termSentAt": None}

        if states.transition(self.repo, job, states.QUEUED, change=again) is None:
            return True  # cancelled meanwhile: the cancel path finishes it
        self._release(job)
        self.repo.delete_replicas(job.id)
        self._paths(job).service_log(
            f"{reason} Retrying: attempt {attempt + 1} of {sched.max_retries + 1} (scheduling.maxRetries).",
            "WARNING")
        return True

    # Cancellation -------------------------------------------------------------------------
    def _advance_cancel(self, job: JobRow) -> None:
        with self._lock:
            preparing = job.id in self._preparing
        handles = self.replicas.handles(job)
        if not handles:
            if not preparing:
                self._finish_cancel(job)
            return
        sent = SchedulingState.of(job.scheduling).term_sent_at
        now = time.time()
        if sent is None:
            for handle in handles:
                self.executor.signal(handle, signal.SIGTERM)
            self.repo.update(job.id, lambda r: setattr(r, "scheduling", {**r.scheduling, "termSentAt": now}))
            return
        if not any(self.executor.group_alive(h) for h in handles):
            self.replicas.poll(job)
            self._finish_cancel(job)
            return
        if now - sent > self.settings.cancel_grace_seconds:
            for handle in handles:
                self.executor.signal(handle, signal.SIGKILL)

    def _finish_cancel(self, job: JobRow) -> None:
        if self._set_state(job, states.CANCELLED) is not None:
            self._paths(job).service_log("Job cancelled.")
