"""The AI Platform Optimizer (Vizier) API over Optuna studies in the metadata store.

Contract
--------
* A study ``projects/P/locations/L/studies/S`` is the Optuna study ``vizier:P:L:S`` in the same
  ``RDBStorage`` as tuning jobs' studies (:class:`mlengine.tuning.studies.StudyStore`): the
  metadata store's database, so studies survive restarts. Its ``studyConfig`` and
  ``createTime`` are Optuna study user attributes; ``studyConfig`` is written last and marks the
  study as complete (a study created halfway by a crash is created again). Trial ``n`` is
  Optuna trial number ``n - 1``.
* Trial states: Optuna WAITING (a trial created ``REQUESTED``, handed out by the next
  suggestion) -> ``REQUESTED``; RUNNING -> ``ACTIVE``, or ``STOPPING`` once ``:stop`` was asked;
  COMPLETE -> ``COMPLETED``; FAIL -> ``COMPLETED`` with ``trialInfeasible``. Measurements, the
  final measurement, the client id and the infeasibility reason are trial user attributes;
  the first metric of each measurement is also Optuna's intermediate value at its
  ``stepCount`` (else its index), which the pruner of ``automatedStoppingConfig`` reads.
* Optuna cannot delete a trial (numbers are positions): a deleted trial is listed in the
  study's ``deletedTrials`` attribute, hidden from every answer, and failed if it was running.
  Samplers still learn from it.
* ``:suggest`` and ``:checkEarlyStoppingState`` are long-running operations in ml v1; the work
  is over when the request returns, so they are stored done (``operations`` table, target the
  study) and ``projects.locations.operations.get`` reads them back.
* Thread-safe: every call holds one lock of this service and, on SQLite, the metadata store's
  writer lock (:meth:`StudyStore.locked`), so suggestions are never handed out twice.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlengine.core.names import validate_path_segment
from mlengine.core.timeutil import rfc3339, utcnow
from mlengine.errors import MLEngineError, already_exists, failed_precondition, invalid, not_found
from mlengine.store.database import Database
from mlengine.store.operations import OperationRepository, OperationRow
from mlengine.tuning.studies import StudyStore
from mlengine.tuning.vizier import render
from mlengine.tuning.vizier.config import (
    StudyConfig,
    objective_values,
    parse_measurement,
    parse_parameters,
    parse_study_config,
)
from mlengine.tuning.vizier.render import CLIENT_ID, FINAL, INFEASIBLE, MEASUREMENTS, STOPPING, TYPE_PREFIX

CONFIG, CREATED, DELETED = "studyConfig", "createTime", "deletedTrials"
MAX_SUGGESTIONS = 100
MAX_CLIENT_ID = 256
STUDY_OUTPUT_FIELDS = frozenset({"name", "state", "createTime", "inactiveReason"})
TRIAL_OUTPUT_FIELDS = frozenset({"name", "clientId", "startTime", "endTime", "trialInfeasible", "infeasibleReason"})
TRIAL_INPUT_FIELDS = frozenset({"parameters", "state", "measurements", "finalMeasurement"})
TRIAL_STATES = ("STATE_UNSPECIFIED", "REQUESTED", "ACTIVE", "COMPLETED")


def study_resource(project: str, location: str, study: str) -> str:
    return f"projects/{project}/locations/{location}/studies/{study}"


def optuna_name(project: str, location: str, study: str) -> str:
    return f"vizier:{project}:{location}:{study}"


@dataclass
class _Open:
    name: str
    study: optuna.Study
    config: StudyConfig
    attrs: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.study._study_id)

    def deleted(self) -> set[int]:
        return set(self.attrs.get(DELETED) or ())

    def trials(self) -> list[FrozenTrial]:
        hidden = self.deleted()
        return [t for t in self.study.get_trials(deepcopy=False) if t.number not in hidden]

    def render(self, trial: FrozenTrial) -> dict[str, Any]:
        return render.render_trial(self.name, self.config, trial)


def _grid_state(config: StudyConfig, trials: list[FrozenTrial]) -> str:
    """COMPLETED once a grid study has started every grid point, else ACTIVE."""
    if not config.spec.is_grid:
        return "ACTIVE"
    started = {t.system_attrs.get("grid_id") for t in trials} - {None}
    return "COMPLETED" if len(started) >= config.spec.grid_size() else "ACTIVE"


class VizierService:
    """Studies and trials of one server (see the module contract)."""

    def __init__(self, db: Database, bayesian: str = "tpe") -> None:
        self.store = StudyStore(db, bayesian)
        self.operations = OperationRepository(db)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, self.store.locked():
            yield

    def close(self) -> None:
        self.store.close()

    # Studies ---------------------------------------------------------------------------------
    def _open(self, project: str, location: str, study: str, sampler: bool = False) -> _Open:
        name = study_resource(project, location, study)
        storage = self.store.storage
        try:
            study_id = storage.get_study_id_from_name(optuna_name(project, location, study))
        except KeyError:
            raise not_found(f"Study {name}") from None
        attrs = storage.get_study_user_attrs(study_id)
        if CONFIG not in attrs:
            raise not_found(f"Study {name}")
        config = parse_study_config(attrs[CONFIG])
        chosen = config.sampler(self.store.bayesian) if sampler else optuna.samplers.RandomSampler()
        loaded = optuna.load_study(study_name=optuna_name(project, location, study), storage=storage,
                                   sampler=chosen, pruner=config.pruner())
        return _Open(name, loaded, config, attrs)

    def create_study(self, project: str, location: str, study_id: Any, body: Any) -> dict[str, Any]:
        if not isinstance(study_id, str) or not study_id:
            raise invalid("studyId", "is required: the id of the new study")
        validate_path_segment("studyId", study_id)
        if not isinstance(body, Mapping):
            raise invalid("study", "the request body must be a JSON object (a Study)")
        for key in body:
            if key != CONFIG and key not in STUDY_OUTPUT_FIELDS:
                raise invalid(key, f"unknown field {key!r} in Study")
        config = parse_study_config(body.get(CONFIG))
        name = study_resource(project, location, study_id)
        created = rfc3339(utcnow())
        with self._locked():
            storage = self.store.storage
            key = optuna_name(project, location, study_id)
            try:
                study = optuna.create_study(study_name=key, storage=storage, directions=config.directions)
            except optuna.exceptions.DuplicatedStudyError:
                if CONFIG in storage.get_study_user_attrs(storage.get_study_id_from_name(key)):
                    raise already_exists(f"Study {name}") from None
                optuna.delete_study(study_name=key, storage=storage)  # a creation a crash interrupted
                study = optuna.create_study(study_name=key, storage=storage, directions=config.directions)
            study.set_user_attr(CREATED, created)
            study.set_user_attr(CONFIG, dict(body[CONFIG]))
        return render.render_study(name, {CONFIG: dict(body[CONFIG]), CREATED: created})

    def get_study(self, project: str, location: str, study: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            return render.render_study(s.name, s.attrs, _grid_state(s.config, s.trials()))

    def list_studies(self, project: str, location: str) -> dict[str, Any]:
        prefix = optuna_name(project, location, "")
        with self._locked():
            storage = self.store.storage
            found = []
            for frozen in sorted(storage.get_all_studies(), key=lambda f: f.study_name):
                if not frozen.study_name.startswith(prefix) or CONFIG not in frozen.user_attrs:
                    continue
                config = parse_study_config(frozen.user_attrs[CONFIG])
                trials = storage.get_all_trials(frozen._study_id, deepcopy=False) if config.spec.is_grid else []
                name = study_resource(project, location, frozen.study_name[len(prefix):])
                found.append(render.render_study(name, frozen.user_attrs, _grid_state(config, trials)))
        return {"studies": found} if found else {}

    def locations(self, project: str) -> list[str]:
        """Locations holding studies of ``project``."""
        prefix = optuna_name(project, "", "")
        with self._locked():
            names = [f.study_name for f in self.store.storage.get_all_studies()]
        return sorted({n[len(prefix):].split(":", 1)[0] for n in names if n.startswith(prefix)})

    def delete_study(self, project: str, location: str, study: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            optuna.delete_study(study_name=s.study.study_name, storage=self.store.storage)
        return {}

    # Trials ----------------------------------------------------------------------------------
    def _trial(self, s: _Open, trial: str) -> FrozenTrial:
        name = f"{s.name}/trials/{trial}"
        number = int(trial) - 1 if trial.isdigit() else -1
        if number < 0 or number in s.deleted():
            raise not_found(f"Trial {name}")
        storage = self.store.storage
        try:
            return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(s.id, number))
        except KeyError:
            raise not_found(f"Trial {name}") from None

    def _running(self, s: _Open, trial: str, action: str) -> FrozenTrial:
        frozen = self._trial(s, trial)
        if frozen.state != TrialState.RUNNING:
            state = render.trial_state(frozen)
            raise failed_precondition(f"Trial {s.name}/trials/{trial} is {state}: cannot {action} "
                                      f"(only ACTIVE or STOPPING trials can)")
        return frozen

    def get_trial(self, project: str, location: str, study: str, trial: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            return s.render(self._trial(s, trial))

    def list_trials(self, project: str, location: str, study: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            trials = [s.render(t) for t in s.trials()]
        return {"trials": trials} if trials else {}

    def create_trial(self, project: str, location: str, study: str, body: Any) -> dict[str, Any]:
        """A trial the user chose (``REQUESTED``: handed out by the next suggestion; ``ACTIVE``;
        or ``COMPLETED`` with its ``finalMeasurement``)."""
        if not isinstance(body, Mapping):
            raise invalid("trial", "the request body must be a JSON object (a Trial)")
        for key in body:
            if key not in TRIAL_INPUT_FIELDS and key not in TRIAL_OUTPUT_FIELDS:
                raise invalid(key, f"unknown field {key!r} in Trial")
        state = body.get("state") or "STATE_UNSPECIFIED"
        if state not in TRIAL_STATES:
            raise invalid("state", f"{state!r} is not one of {', '.join(TRIAL_STATES)}")
        raw_measurements = body.get("measurements") or []
        if not isinstance(raw_measurements, list):
            raise invalid("measurements", "must be a list of Measurement")
        measurements = [parse_measurement(m, f"measurements[{i}]") for i, m in enumerate(raw_measurements)]
        final = body.get("finalMeasurement")
        if state == "COMPLETED" and final is None:
            raise invalid("finalMeasurement", "is required for a COMPLETED trial")
        with self._locked():
            s = self._open(project, location, study)
            params = parse_parameters(s.config, body.get("parameters"), "parameters")
            attrs: dict[str, Any] = {MEASUREMENTS: measurements} if measurements else {}
            if final is not None:
                measured = parse_measurement(final, "finalMeasurement")
                values = objective_values(s.config, measured, "finalMeasurement")
                s.study.add_trial(optuna.trial.create_trial(
                    state=TrialState.COMPLETE, values=values, params=params,
                    distributions=s.config.spec.distributions(), user_attrs={**attrs, FINAL: measured},
                    intermediate_values=self._intermediate(s.config, measurements)))
            elif state == "REQUESTED":
                s.study.enqueue_trial(params, user_attrs=attrs)
            else:
                s.study.add_trial(optuna.trial.create_trial(
                    state=TrialState.RUNNING, params=params, distributions=s.config.spec.distributions(),
                    user_attrs=attrs, intermediate_values=self._intermediate(s.config, measurements)))
            return s.render(s.study.get_trials(deepcopy=False)[-1])

    @staticmethod
    def _intermediate(config: StudyConfig, measurements: list[dict[str, Any]]) -> dict[int, float]:
        """The first metric of each measurement by step (single-objective studies only)."""
        if len(config.metrics) != 1:
            return {}
        out: dict[int, float] = {}
        for index, measurement in enumerate(measurements):
            for metric in measurement["metrics"]:
                if metric["metric"] == config.metrics[0].name:
                    out[int(measurement.get("stepCount", index))] = float(metric["value"])
        return out

    def delete_trial(self, project: str, location: str, study: str, trial: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            frozen = self._trial(s, trial)
            storage = self.store.storage
            if not frozen.state.is_finished():
                storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            s.study.set_user_attr(DELETED, sorted(s.deleted() | {frozen.number}))
        return {}

    def suggest(self, project: str, location: str, study: str, body: Any) -> dict[str, Any]:
        """Trials for ``clientId``: its pending ones first (AI Platform hands the same trial
        to a client until it completes it), then new ones from the study's sampler."""
        if not isinstance(body, Mapping):
            raise invalid("body", "must be a JSON object (a SuggestTrialsRequest)")
        for key in body:
            if key not in ("suggestionCount", "clientId"):
                raise invalid(key, f"unknown field {key!r} in SuggestTrialsRequest")
        count = body.get("suggestionCount")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SUGGESTIONS:
            raise invalid("suggestionCount", f"is required: an integer from 1 to {MAX_SUGGESTIONS}, got {count!r}")
        client = body.get("clientId")
        if not isinstance(client, str) or not client.strip() or len(client) > MAX_CLIENT_ID:
            raise invalid("clientId", f"is required: a non-empty string of at most {MAX_CLIENT_ID} characters")
        started = rfc3339(utcnow())
        with self._locked():
            s = self._open(project, location, study, sampler=True)
            trials = s.trials()
            chosen = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get(CLIENT_ID) == client]
            chosen = chosen[:count]
            distributions = s.config.spec.distributions()
            while len(chosen) < count and _grid_state(s.config, trials) == "ACTIVE":
                asked = s.study.ask(distributions)
                asked.set_user_attr(CLIENT_ID, client)
                fresh = self.store.storage.get_trial(asked._trial_id)
                chosen.append(fresh)
                trials.append(fresh)
            response = {"@type": TYPE_PREFIX + "SuggestTrialsResponse", "trials": [s.render(t) for t in chosen],
                        "studyState": _grid_state(s.config, trials), "startTime": started,
                        "endTime": rfc3339(utcnow())}
        meta = {"@type": TYPE_PREFIX + "SuggestTrialsMetadata", "study": s.name, "clientId": client,
                "suggestionCount": count, "createTime": started}
        return render.render_operation(self._operation(project, "suggest", "SUGGEST_TRIALS", s.name, meta, response))

    def add_measurement(self, project: str, location: str, study: str, trial: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping) or set(body) - {"measurement"}:
            raise invalid("measurement", "the body must be {\"measurement\": Measurement}")
        measurement = parse_measurement(body.get("measurement"), "measurement")
        with self._locked():
            s = self._open(project, location, study)
            frozen = self._running(s, trial, "add a measurement")
            measurement["elapsedTime"] = render.elapsed(frozen.datetime_start)
            measurements = [*frozen.user_attrs.get(MEASUREMENTS, []), measurement]
            storage = self.store.storage
            storage.set_trial_user_attr(frozen._trial_id, MEASUREMENTS, measurements)
            for step, value in self._intermediate(s.config, measurements).items():
                if frozen.intermediate_values.get(step) != value:
                    storage.set_trial_intermediate_value(frozen._trial_id, step, value)
            return s.render(storage.get_trial(frozen._trial_id))

    def complete(self, project: str, location: str, study: str, trial: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise invalid("body", "must be a JSON object (a CompleteTrialRequest)")
        for key in body:
            if key not in ("finalMeasurement", "trialInfeasible", "infeasibleReason"):
                raise invalid(key, f"unknown field {key!r} in CompleteTrialRequest")
        infeasible = body.get("trialInfeasible") or False
        if not isinstance(infeasible, bool):
            raise invalid("trialInfeasible", f"must be true or false, got {infeasible!r}")
        reason = body.get("infeasibleReason")
        if reason is not None and not isinstance(reason, str):
            raise invalid("infeasibleReason", "must be a string")
        final = None if body.get("finalMeasurement") is None else parse_measurement(
            body["finalMeasurement"], "finalMeasurement")
        with self._locked():
            s = self._open(project, location, study)
            frozen = self._running(s, trial, "complete it")
            storage = self.store.storage
            if infeasible:
                if reason:
                    storage.set_trial_user_attr(frozen._trial_id, INFEASIBLE, reason)
                s.study.tell(frozen.number, state=TrialState.FAIL)
            else:
                if final is None:
                    earlier = frozen.user_attrs.get(MEASUREMENTS) or []
                    if not earlier:
                        raise invalid("finalMeasurement", "is required: the trial has no measurement to use")
                    final = dict(earlier[-1])  # the latest one, as reported
                else:
                    final["elapsedTime"] = render.elapsed(frozen.datetime_start)
                values = objective_values(s.config, final, "finalMeasurement")
                storage.set_trial_user_attr(frozen._trial_id, FINAL, final)
                s.study.tell(frozen.number, values)
            return s.render(storage.get_trial(frozen._trial_id))

    def stop(self, project: str, location: str, study: str, trial: str) -> dict[str, Any]:
        with self._locked():
            s = self._open(project, location, study)
            frozen = self._running(s, trial, "stop it")
            self.store.storage.set_trial_user_attr(frozen._trial_id, STOPPING, True)
            return s.render(self.store.storage.get_trial(frozen._trial_id))

    def check_early_stopping(self, project: str, location: str, study: str, trial: str) -> dict[str, Any]:
        """Whether the study's ``automatedStoppingConfig`` would stop the trial now (never
        without one)."""
        started = rfc3339(utcnow())
        with self._locked():
            s = self._open(project, location, study)
            frozen = self._running(s, trial, "check early stopping")
            should = bool(s.config.stopping and frozen.intermediate_values
                          and s.study.pruner.prune(s.study, frozen))
        name = f"{s.name}/trials/{trial}"
        meta = {"@type": TYPE_PREFIX + "CheckTrialEarlyStoppingStateMetatdata", "study": s.name, "trial": name,
                "createTime": started}
        response = {"@type": TYPE_PREFIX + "CheckTrialEarlyStoppingStateResponse", "shouldStop": should,
                    "startTime": started, "endTime": rfc3339(utcnow())}
        row = self._operation(project, "early-stopping", "CHECK_EARLY_STOPPING_STATE", name, meta, response)
        return render.render_operation(row)

    def list_optimal(self, project: str, location: str, study: str) -> dict[str, Any]:
        """The best completed trial (one metric) or the Pareto front (several)."""
        with self._locked():
            s = self._open(project, location, study)
            done = [t for t in s.trials() if t.state == TrialState.COMPLETE and t.values]
            signs = [1.0 if d == "maximize" else -1.0 for d in s.config.directions]
            scored = [(t, [v * sign for v, sign in zip(t.values, signs, strict=True)]) for t in done]

            def dominated(score: list[float]) -> bool:
                return any(all(o >= v for o, v in zip(other, score, strict=True)) and other != score
                           for _, other in scored)

            front = [t for t, score in scored if not dominated(score)]
            if len(signs) == 1 and front:
                front = front[:1]
            optimal = [s.render(t) for t in front]
        return {"trials": optimal} if optimal else {}

    # Operations ------------------------------------------------------------------------------
    def _operation(self, project: str, prefix: str, kind: str, target: str, meta: dict[str, Any],
                   response: dict[str, Any]) -> OperationRow:
        name = f"{prefix}-{uuid.uuid4().hex}"
        return self.operations.create(project, name, kind, target, meta, done=True, response=response)

    def get_operation(self, project: str, location: str, operation: str) -> dict[str, Any]:
        return render.render_operation(self._location_operation(project, location, operation))

    def cancel_operation(self, project: str, location: str, operation: str) -> dict[str, Any]:
        row = self._location_operation(project, location, operation)
        raise failed_precondition(f"Operation {render.render_operation(row)['name']} is done and cannot be "
                                  f"cancelled ({row.kind} operations finish within their request)")

    def _location_operation(self, project: str, location: str, operation: str) -> OperationRow:
        name = f"Operation projects/{project}/locations/{location}/operations/{operation}"
        try:
            row = self.operations.get(project, operation)
        except MLEngineError:
            raise not_found(name) from None
        if render.location_of(row) != location:
            raise not_found(name)
        return row
