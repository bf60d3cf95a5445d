"""Tuning job kinds.

``tuning``  a training job with ``trainingInput.hyperparameters``: a controller kind (no
            replicas of its own) whose :meth:`drive` is the :class:`~mlengine.tuning.tuner.Tuner`;
``trial``   one trial of it: a training job whose replicas get the trial's ``--name=value``
            arguments, ``TF_CONFIG.task.trial`` and ``CLOUD_ML_TRIAL_ID``; never listed on its
            own, never submitted through the API (the tuner creates it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mlengine.jobs.kinds import JobKind, KindContext, Submission
from mlengine.store.models import JobRow
from mlengine.training.kind import TrainingKind
from mlengine.tuning import tuner
from mlengine.tuning.spec import parse_hyperparameters
from mlengine.tuning.trials import admit


class TrialKind(TrainingKind):
    name: ClassVar[str] = tuner.TRIAL_KIND
    listed: ClassVar[bool] = False

    def accepts(self, body: Mapping[str, Any]) -> bool:
        return False  # trials are created by their tuning job only

    def hyperparameters(self, job: JobRow) -> dict[str, Any] | None:
        return dict(job.kind_state.get("hyperparameters") or {})

    def trial_id(self, job: JobRow) -> str | None:
        return str(job.kind_state.get("trialId"))


class TuningKind(JobKind):
    name: ClassVar[str] = tuner.KIND
    input_field: ClassVar[str] = "trainingInput"
    output_field: ClassVar[str] = "trainingOutput"
    controller: ClassVar[bool] = True

    def __init__(self, context: KindContext, training: TrainingKind) -> None:
        self.context = context
        self.training = training
        self.tuner = tuner.Tuner(context.settings, context.repo, context.db, context.wake)

    def accepts(self, body: Mapping[str, Any]) -> bool:
        ti = body.get("trainingInput")
        return isinstance(ti, Mapping) and ti.get("hyperparameters") is not None

    def validate(self, project: str, body: Mapping[str, Any]) -> Submission:
        submission = self.training.validate(project, body)
        # Kept as written (TF_CONFIG.job shows it); the tuner parses it again when it runs.
        parse_hyperparameters(submission.input.get("hyperparameters"))
        kind_state, output = admit(self.context.repo, project, submission.input)
        return Submission(submission.job_id, submission.input, submission.labels,
                          submission.max_running_seconds, submission.max_wait_seconds, output,
                          {**submission.kind_state, **kind_state})  # the training kind's runtime warnings

    def drive(self, active: list[JobRow]) -> None:
        self.tuner.tick(active)

    def close(self) -> None:
        self.tuner.close()
