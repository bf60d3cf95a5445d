"""Optuna studies of tuning jobs, kept in the metadata store's own database.

Contract
--------
* One Optuna ``RDBStorage`` per server process, on the same SQLAlchemy URL as the metadata
  store (SQLite or PostgreSQL): Optuna's tables (``studies``, ``trials``, ...) live next to
  mlengine's, Optuna's Alembic revision in ``alembic_version`` and mlengine's in
  ``mlengine_alembic_version`` (see ``mlengine.store.migrate``). So a restarted server loads
  every study as it was, and ``resumePreviousJobId`` finds the previous job's study.
* One study per tuning job, named :func:`mlengine.tuning.trials.study_name` (job id plus primary key: a job id reused
  in another project never meets an old study). Trial *n* of the study is trial id ``n + 1``.
* Studies are used from the scheduler thread only. On SQLite every Optuna call must run
  inside :meth:`StudyStore.locked`, which holds the metadata store's writer lock so Optuna's
  engine and mlengine's never write at the same time (SQLite allows one writer).
* :meth:`StudyStore.open` creates a study (copying the finished trials of the previous job's
  study when resuming) or loads it; a study whose creation was interrupted by a crash is
  created again, because the job records ``studyReady`` only after it is complete.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import optuna

from mlengine.store.database import Database
from mlengine.store.models import JobRow
from mlengine.tuning.samplers import make_pruner, make_sampler
from mlengine.tuning.spec import TuningSpec
from mlengine.tuning.trials import study_name

log = logging.getLogger("mlengine.tuner")


class StudyStore:
    def __init__(self, db: Database, bayesian: str = "tpe") -> None:
        self.db = db
        self.bayesian = bayesian
        self._storage: optuna.storages.RDBStorage | None = None
        self._studies: dict[int, optuna.Study] = {}
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Run Optuna calls under the metadata store's writer lock (SQLite), quietly."""
        with self.db.write_lock(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        if self._storage is None:
            kwargs: dict[str, Any] = (
                {"connect_args": {"timeout": 30}} if self.db.is_sqlite else {"pool_pre_ping": True}
            )
            with self.locked():
                self._storage = optuna.storages.RDBStorage(self.db.url, engine_kwargs=kwargs)
        return self._storage

    def open(self, job: JobRow, spec: TuningSpec, previous: str | None = None) -> optuna.Study:
        """The job's study, created on first use (with ``previous``'s finished trials copied in)."""
        cached = self._studies.get(job.id)
        if cached is not None:
            return cached
        name = study_name(job)
        sampler = make_sampler(spec, bayesian=self.bayesian)
        pruner = make_pruner(spec)
        with self.locked():
            if job.kind_state.get("studyReady"):
                study = optuna.load_study(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner)
            else:
                with contextlib.suppress(KeyError):
                    optuna.delete_study(study_name=name, storage=self.storage)
                study = optuna.create_study(study_name=name, storage=self.storage, sampler=sampler,
                                            pruner=pruner, direction=spec.direction)
                if previous:
                    self._copy_finished(previous, study)
        self._studies[job.id] = study
        return study

    def _copy_finished(self, previous: str, study: optuna.Study) -> None:
        try:
            old = optuna.load_study(study_name=previous, storage=self.storage)
        except KeyError:
            return  # the previous job never started a trial
        finished = [t for t in old.get_trials(deepcopy=False) if t.state.is_finished()]
        study.add_trials(finished)
        log.info("study %s resumed with %d trials of %s", study.study_name, len(finished), previous)

    def forget(self, job_pk: int) -> None:
        """Drop the in-memory study of a job that ended (its storage stays)."""
        self._studies.pop(job_pk, None)

    def report(self, study: optuna.Study, number: int, values: dict[int, float]) -> bool:
        """Record trial ``number``'s intermediate values (new steps only); True when the
        study's pruner says the trial should stop. Call inside :meth:`locked`."""
        storage = self.storage
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        known = storage.get_trial(trial_id).intermediate_values
        fresh = {step: v for step, v in values.items() if step >= 0 and step not in known}
        for step, value in sorted(fresh.items()):
            storage.set_trial_intermediate_value(trial_id, step, value)
        if not fresh:
            return False
        return bool(study.pruner.prune(study, storage.get_trial(trial_id)))

    def close(self) -> None:
        if self._storage is not None:
            self._storage.engine.dispose()
