"""The :class:`~mlengine.jobs.kinds.JobKind` contract as a test suite every kind runs.

Subclass :class:`JobKindConformance` and provide three fixtures: ``kind`` (the kind under
test), ``valid_body`` (a ``Job`` body it accepts) and ``invalid_bodies`` (a list of
``(body, field)`` pairs: bodies it must refuse with ``INVALID_ARGUMENT`` naming ``field``)::

    class TestSleepKind(JobKindConformance):
        @pytest.fixture
        def kind(self): return SleepKind()
        ...

The suite checks submission (accepts, validate, refusals that name the field), the replica
plan, the outcome rule on replica results, and rendering, without running anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from mlengine.core.timeutil import utcnow
from mlengine.errors import Code, MLEngineError
from mlengine.jobs import lifecycle
from mlengine.jobs.executors import ReplicaStatus
from mlengine.jobs.kinds import JobKind, ReplicaResult, Submission
from mlengine.store.models import JobRow


def job_row(kind: JobKind, submission: Submission, project: str = "p") -> JobRow:
    """The row the API would store for ``submission`` (not persisted)."""
    return JobRow(id=1, project=project, job_id=submission.job_id, kind=kind.name, parent_pk=None,
                  state=lifecycle.QUEUED, create_time=utcnow(), error_message="", input=submission.input,
                  output=submission.output, labels=submission.labels, labels_version=0, scheduling={},
                  kind_state=submission.kind_state, version=1)


class JobKindConformance:
    """Tests every job kind passes; subclasses provide ``kind``, ``valid_body`` and ``invalid_bodies``."""

    @pytest.fixture
    def invalid_bodies(self) -> list[tuple[dict[str, Any], str]]:
        return []

    def test_identity(self, kind: JobKind) -> None:
        assert kind.name and len(kind.name) <= 32
        assert kind.input_field.endswith("Input") and kind.output_field.endswith("Output")

    def test_accepts_and_validates(self, kind: JobKind, valid_body: Mapping[str, Any]) -> None:
        assert kind.accepts(valid_body)
        submission = kind.validate("p", valid_body)
        assert submission.job_id == valid_body["jobId"]
        json.dumps([submission.input, submission.output, submission.kind_state, submission.labels])
        for limit in (submission.max_running_seconds, submission.max_wait_seconds):
            assert limit is None or limit > 0

    def test_refusals_name_the_field(self, kind: JobKind,
                                     invalid_bodies: list[tuple[dict[str, Any], str]]) -> None:
        for body, field in invalid_bodies:
            with pytest.raises(MLEngineError) as info:
                kind.validate("p", body)
            assert info.value.code is Code.INVALID_ARGUMENT, info.value
            assert field in info.value.message, (field, info.value.message)

    def test_render(self, kind: JobKind, valid_body: Mapping[str, Any]) -> None:
        row = job_row(kind, kind.validate("p", valid_body))
        rendered = kind.render(row)
        assert set(rendered) >= {kind.input_field, kind.output_field}
        json.dumps(rendered)

    def test_plan(self, kind: JobKind, valid_body: Mapping[str, Any]) -> None:
        row = job_row(kind, kind.validate("p", valid_body))
        plan = kind.plan(row)
        if kind.controller:
            assert plan == []
            return
        assert plan, "a kind that is not a controller runs at least one replica"
        names = [r.task_name for r in plan]
        assert len(set(names)) == len(names)
        for request in plan:
            assert request.resources.cpus >= 0 and request.resources.memory_gb >= 0 and request.resources.gpus >= 0

    def test_outcome(self, kind: JobKind, valid_body: Mapping[str, Any]) -> None:
        if kind.controller:
            return
        row = job_row(kind, kind.validate("p", valid_body))
        plan = kind.plan(row)
        running = [ReplicaResult(r.task_name, r.task_type, ReplicaStatus("running")) for r in plan]
        assert kind.outcome(row, running) is None
        failed = [ReplicaResult(plan[0].task_name, plan[0].task_type, ReplicaStatus("exited", 2))] + running[1:]
        outcome = kind.outcome(row, failed)
        assert outcome is not None and outcome.state == lifecycle.FAILED and plan[0].task_name in outcome.message
        lost = [ReplicaResult(plan[0].task_name, plan[0].task_type, ReplicaStatus("lost", None, "gone"))]
        outcome = kind.outcome(row, lost + running[1:])
        assert outcome is not None and outcome.state == lifecycle.FAILED
        done = [ReplicaResult(r.task_name, r.task_type, ReplicaStatus("exited", 0)) for r in plan]
        outcome = kind.outcome(row, done)
        assert outcome is not None and outcome.state == lifecycle.SUCCEEDED
