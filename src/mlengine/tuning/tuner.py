"""The tuner: decides which trials a tuning job runs; the scheduler runs them like any job.

The tuning job kind (:mod:`mlengine.tuning.kind`) is a controller: the scheduler leaves tuning
jobs to it and calls :meth:`~Tuner.tick` with every active job on each pass, in the scheduler
thread, right before it starts queued jobs. Trials are jobs of the ``trial`` kind. So a trial
created in a tick starts in the same pass (the scheduling gap between trials is one pass plus a
process start). Per tuning job, a tick:

1. records each trial whose job row ended: reads its metric (:mod:`.metrics`), judges it
   (:func:`.trials.judge`: no metric = failed, with a message saying so), tells Optuna;
2. feeds running trials' intermediate values to the pruner when early stopping is on, and
   stops a trial the pruner rejects (its job goes CANCELLING; the trial shows SUCCEEDED with
   ``isTrialStoppedEarly``);
3. moves the tuning job QUEUED -> PREPARING -> RUNNING as its first trial does (the tuning job
   itself holds no CPU slots);
4. decides whether the job ends: ``maxFailedTrials`` (or the default limit) reached, all
   trials done, a trial that could not even start (its packages, its module, its size: every
   trial would fail alike), or a cancel (deadlines are the scheduler's: it cancels the job).
   A job that ends first stops its running trials and only takes its final state
   once none is left (recorded in ``kind_state["ending"]``);
5. otherwise asks Optuna for new trials while fewer than ``maxParallelTrials`` are active and
   fewer than ``maxTrials`` were created (for grid search: while grid points are left) and
   creates their job rows (QUEUED; :mod:`.trials` documents their fields);
6. writes ``trainingOutput`` when it changed.

Everything is in the metadata store (job rows and Optuna's tables), so a restarted server
carries on; an Optuna trial asked for but never turned into a job row (a crash in between) is
marked failed when the study is loaded again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mlengine.config import Settings
from mlengine.errors import MLEngineError
from mlengine.jobs import lifecycle as states
from mlengine.jobs.cancellation import request_cancel
from mlengine.jobs.paths import JobPaths
from mlengine.store.database import Database
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow
from mlengine.tuning import trials as trial_rows
from mlengine.tuning.attribution import SharedEvents, TrialRun, trial_run
from mlengine.tuning.metrics import EventSource, MetricWatcher, collect, intermediate_values
from mlengine.tuning.spec import TuningSpec, parse_hyperparameters

log = logging.getLogger("mlengine.tuner")

#: Job kinds (mlengine.tuning.kind): a tuning job and one of its trials.
KIND = "tuning"
TRIAL_KIND = "trial"

#: Reports a running trial needs before early stopping may judge it.
MIN_REPORTS_TO_STOP = 2
#: How long the ticks of one tuning job may keep failing (an engine bug, a database that is
#: down) before the job ends FAILED.
MAX_ERROR_SECONDS = 60.0


class Tuner:
    def __init__(self, settings: Settings, repo: JobRepository, db: Database, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.repo = repo
        self.db = db
        self.wake = wake
        self._studies: Any = None
        self._watchers: dict[int, MetricWatcher] = {}
        self._shared: dict[int, SharedEvents] = {}  # tuning job pk -> its job directory's event files
        self._judged: dict[int, int] = {}  # trial job pk -> reports the pruner has seen
        self._errors: dict[int, float] = {}  # tuning job pk -> when its ticks began failing
        self._reconciled: set[int] = set()

    # Driven by the tuning kind (mlengine.tuning.kind) ---------------------------------------
    def tick(self, active: list[JobRow]) -> None:
        parents = {j.id: j for j in active if j.kind == KIND}
        for job in active:
            if job.kind == TRIAL_KIND and job.parent_pk not in parents:
                self._stop_trial(job, "parent")  # its tuning job ended: nothing may outlive it
        for parent in parents.values():
            try:
                self._step(parent)
                self._errors.pop(parent.id, None)
            except MLEngineError as exc:  # e.g. the Bayesian sampler is misconfigured
                self._end(parent, states.FAILED, exc.message)
            except Exception as exc:  # the loop must survive; a job failing for long ends
                log.exception("tuning job %s: tick failed", parent.job_id)
                since = self._errors.setdefault(parent.id, time.monotonic())
                if time.monotonic() - since > MAX_ERROR_SECONDS:
                    self._end(parent, states.FAILED, f"Internal error in the tuner: {exc}")

    def _remember(self, job: JobRow, **values: Any) -> JobRow:
        """Merge ``values`` into the job's ``kind_state`` (the tuner's own record)."""
        return self.repo.update(job.id, lambda r: setattr(r, "kind_state", {**r.kind_state, **values}))

    def close(self) -> None:
        if self._studies is not None:
            self._studies.close()

    # One tuning job -----------------------------------------------------------------------
    def _store(self) -> Any:
        if self._studies is None:
            from mlengine.tuning.studies import StudyStore

            self._studies = StudyStore(self.db, self.settings.tuning_bayesian)
        return self._studies

    def _paths(self, job: JobRow) -> JobPaths:
        return JobPaths.of(self.settings, job.project, job.job_id)

    def _study(self, parent: JobRow, spec: TuningSpec, children: list[JobRow]) -> Any:
        store = self._store()
        previous = None
        if spec.resume_job_id and not parent.kind_state.get("studyReady"):
            previous = parent.kind_state.get("resumeStudy")
        study = store.open(parent, spec, previous)
        if not parent.kind_state.get("studyReady"):
            self._remember(parent, studyReady=True)
            self._reconciled.add(parent.id)
        elif parent.id not in self._reconciled:
            self._reconciled.add(parent.id)
            self._fail_orphan_trials(study, children)
        return study

    def _fail_orphan_trials(self, study: Any, children: list[JobRow]) -> None:
        """Optuna trials asked for but never given a job row (the server died in between)."""
        from optuna.trial import TrialState

        known = {c.kind_state.get("trialNumber") for c in children}
        store = self._store()
        with store.locked():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.number not in known:
                    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)

    def _step(self, parent: JobRow) -> None:
        spec = parse_hyperparameters(parent.input.get("hyperparameters"))
        children = self.repo.children(parent)
        study = self._study(parent, spec, children)
        for child in children:
            if child.state in states.TERMINAL and "outcome" not in child.kind_state:
                self._record(parent, spec, study, child)
        ending = parent.kind_state.get("ending")
        if spec.early_stopping and not ending and parent.state != states.CANCELLING:
            for child in children:
                if child.state == states.RUNNING and not child.kind_state.get("stopRequested"):
                    self._watch(parent, spec, study, child)
        children = self.repo.children(parent)
        parent = self._progress(parent, children)
        if parent.state == states.CANCELLING and not ending:
            ending = {"state": states.CANCELLED, "error": None}
        ending = ending or self._ending(parent, spec, study, children)
        if ending:
            self._finish(parent, spec, children, ending)
            return
        created = self._create_trials(parent, spec, study, children)
        if created:
            children = self.repo.children(parent)
            self.wake()
        self._write_output(parent, spec, children)

    # Finished and running trials ---------------------------------------------------------
    def _trial_sources(self, parent: JobRow, child: JobRow) -> tuple[Path, EventSource, str]:
        """(metric file, the trial's TF event files or None, how to describe where they are)."""
        metric_file = self._paths(child).metric_file
        trial_id = str(child.kind_state.get("trialId"))
        job_dir = parent.input.get("jobDir")
        if not job_dir:
            return metric_file, None, "the job directory (this job has no jobDir)"
        from mlengine.storage import uris

        if not uris.is_local(job_dir):
            return metric_file, None, f"{uris.join(job_dir, trial_id)} (read for local job directories only)"
        shared = self._shared.get(parent.id)
        if shared is None:  # one index of the job directory per tuning job, shared by its trials
            shared = self._shared[parent.id] = SharedEvents(uris.local_path(job_dir), lambda: self._runs(parent))
        return metric_file, partial(shared.files_of, trial_id), f"the job directory {job_dir}"

    def _runs(self, parent: JobRow) -> list[TrialRun]:
        return [trial_run(str(c.kind_state.get("trialId")), c, self.repo.replicas(c.id))
                for c in self.repo.children(parent)]

    def _record(self, parent: JobRow, spec: TuningSpec, study: Any, child: JobRow) -> None:
        from optuna.trial import TrialState

        metric_file, events_dir, where = self._trial_sources(parent, child)
        watcher = self._watchers.pop(child.id, None)
        self._judged.pop(child.id, None)
        metrics = watcher.poll(final=True) if watcher else collect(metric_file, events_dir, spec.metric_tag)
        outcome = trial_rows.judge(child, metrics, spec, where)
        number = int(child.kind_state["trialNumber"])
        store = self._store()
        with store.locked():
            values = intermediate_values(metrics.reports)
            if values:
                store.report(study, number, values)
            if outcome.optuna_state == "COMPLETE":
                study.tell(number, outcome.value, skip_if_finished=True)
            else:
                study.tell(number, state=TrialState[outcome.optuna_state], skip_if_finished=True)
        self._remember(child, outcome=outcome.as_internal())
        self._paths(parent).service_log(outcome.message, "ERROR" if outcome.state == states.FAILED else "INFO")

    def _watch(self, parent: JobRow, spec: TuningSpec, study: Any, child: JobRow) -> None:
        watcher = self._watchers.get(child.id)
        if watcher is None:
            metric_file, events_dir, _ = self._trial_sources(parent, child)
            watcher = self._watchers[child.id] = MetricWatcher(metric_file, events_dir, spec.metric_tag)
        reports = watcher.poll().reports
        values = intermediate_values(reports)
        if len(values) < MIN_REPORTS_TO_STOP or self._judged.get(child.id) == len(values):
            return
        self._judged[child.id] = len(values)
        store = self._store()
        with store.locked():
            stop = store.report(study, int(child.kind_state["trialNumber"]), values)
        if stop:
            last = reports[-1]
            self._paths(parent).service_log(
                f"Stopping trial {child.kind_state.get('trialId')} early: at step {last.step} its "
                f"{spec.metric_tag} ({last.value:g}) is worse than most finished trials at that point.")
            self._stop_trial(child, "early")

    def _stop_trial(self, child: JobRow, reason: str) -> None:
        """Stop a trial's job through the one cancel path: QUEUED ends at once,
        PREPARING/RUNNING go CANCELLING (the scheduler then stops its processes)."""
        if child.state in states.TERMINAL or child.state == states.CANCELLING:
            return

        def mark(row: JobRow) -> None:
            row.kind_state = {**row.kind_state, "stopRequested": row.kind_state.get("stopRequested") or reason}

        request_cancel(self.repo, child, None, controller=False, change=mark)
        self.wake()

    # The tuning job's own state ----------------------------------------------------------
    def _transition(self, parent: JobRow, new: str, error: str | None = None) -> JobRow:
        """Move the tuning job to ``new`` if it is still in the state read (a cancel may have
        arrived meanwhile: then nothing changes and the next tick sees the cancel)."""
        row = states.transition(self.repo, parent, new, error=error)
        return row if row is not None else self.repo.get_by_pk(parent.id)

    def _progress(self, parent: JobRow, children: list[JobRow]) -> JobRow:
        begun = [c for c in children if c.state != states.QUEUED]
        if parent.state == states.QUEUED and begun:
            parent = self._transition(parent, states.PREPARING)
        ran = any(c.state in (states.RUNNING, states.CANCELLING) or c.start_time for c in children)
        if parent.state == states.PREPARING and (ran or any("outcome" in c.kind_state for c in children)):
            parent = self._transition(parent, states.RUNNING)
        return parent

    def _ending(self, parent: JobRow, spec: TuningSpec, study: Any, children: list[JobRow]) -> dict[str, Any] | None:
        """Whether (and how) the tuning job ends now; None while it goes on."""
        outcomes = [c.kind_state["outcome"] for c in children if "outcome" in c.kind_state]
        failed = [o for o in outcomes if o["state"] == states.FAILED]
        last_failure = f" Last failure: {failed[-1]['message']}" if failed else ""
        if failed and len(failed) >= spec.failure_limit():
            return {"state": states.FAILED, "error": (
                f"{len(failed)} trial(s) failed, which reaches the limit of {spec.failure_limit()} "
                f"(maxFailedTrials); the tuning job stops.{last_failure}")}
        unstarted = [c for c in children if c.state == states.FAILED and c.start_time is None]
        if unstarted:  # could not be scheduled or prepared: every trial would fail the same way
            return {"state": states.FAILED, "error": (
                f"Trial {unstarted[0].kind_state.get('trialId')} could not start, and every trial "
                f"would fail the same way: {unstarted[0].error_message}")}
        if any(c.state in states.ACTIVE for c in children) or not self._all_created(spec, study, children):
            return None
        if any(o["state"] == states.SUCCEEDED for o in outcomes):
            return {"state": states.SUCCEEDED, "error": None}
        return {"state": states.FAILED, "error": f"All {len(children)} trial(s) failed.{last_failure}"}

    def _all_created(self, spec: TuningSpec, study: Any, children: list[JobRow]) -> bool:
        if len(children) >= spec.max_trials:
            return True
        if spec.is_grid:
            from mlengine.tuning.samplers import grid_points_started

            with self._store().locked():
                return bool(grid_points_started(study) >= spec.grid_size())
        return False

    def _finish(self, parent: JobRow, spec: TuningSpec, children: list[JobRow], ending: dict[str, Any]) -> None:
        active = [c for c in children if c.state in states.ACTIVE]
        if active:
            if not parent.kind_state.get("ending"):
                if ending.get("error"):
                    self._paths(parent).service_log(ending["error"], "ERROR")
                self._paths(parent).service_log(f"Stopping {len(active)} running trial(s).")
                parent = self._remember(parent, ending=ending)
            for child in active:
                self._stop_trial(child, "parent")
            self._write_output(parent, spec, children)
            return
        parent = self._write_output(parent, spec, children)
        final = self._end(parent, ending["state"], ending.get("error"))
        if final.state == ending["state"]:
            self._store().forget(parent.id)
            self._shared.pop(parent.id, None)
            for child in children:
                self._watchers.pop(child.id, None)
                self._judged.pop(child.id, None)

    def _end(self, parent: JobRow, state: str, error: str | None) -> JobRow:
        paths = self._paths(parent)
        if state == states.SUCCEEDED:
            best = (parent.output or {}).get("trials", [{}])[0]
            metric = best.get("finalMetric", {}).get("objectiveValue")
            paths.service_log(f"Tuning job completed successfully; best trial: {best.get('trialId')} "
                              f"({metric}).")
        elif state == states.CANCELLED:
            paths.service_log("Job cancelled.")
        elif error and not parent.kind_state.get("ending"):
            paths.service_log(error, "ERROR")
        return self._transition(parent, state, error=error)

    # New trials ---------------------------------------------------------------------------
    def _create_trials(self, parent: JobRow, spec: TuningSpec, study: Any, children: list[JobRow]) -> int:
        active = sum(1 for c in children if c.state in states.ACTIVE)
        made = 0
        store = self._store()
        while active < spec.max_parallel_trials and len(children) + made < spec.max_trials:
            if spec.is_grid and self._all_created(spec, study, children):
                break
            with store.locked():
                trial = study.ask(fixed_distributions=spec.distributions())
            trial_id = str(trial.number + 1)
            hyperparameters = spec.external(trial.params)
            self.repo.create(
                parent.project, trial_rows.child_job_id(parent.job_id, trial_id), kind=TRIAL_KIND,
                state=states.QUEUED, input=parent.input, labels=parent.labels, parent_pk=parent.id,
                kind_state={"trialId": trial_id, "trialNumber": trial.number, "hyperparameters": hyperparameters},
            )
            args = " ".join(f"--{k}={v}" for k, v in hyperparameters.items())
            self._paths(parent).service_log(f"Trial {trial_id} queued: {args}")
            made += 1
            active += 1
        return made

    def _write_output(self, parent: JobRow, spec: TuningSpec, children: list[JobRow]) -> JobRow:
        output = trial_rows.render_output(spec, children)
        if output == parent.output:
            return parent
        return self.repo.update(parent.id, lambda r: setattr(r, "output", output))
