"""jobs of any kind: kind, parent, generic input/output, typed scheduling state

Revision ID: 0004
Revises: 0003

Moves today's rows: ``training_input``/``training_output`` become ``input``/``output``; the
untyped ``internal`` record is split into the scheduler's ``scheduling`` record, the kind's
``kind_state``, ``labels_version`` and ``parent_pk``; ``kind`` is ``tuning`` for tuning jobs,
``trial`` for their trials and ``training`` otherwise.
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEDULING_KEYS = {
    "maxRunningSeconds": "maxRunningSeconds",
    "maxWaitSeconds": "maxWaitSeconds",
    "demand": "demand",
    "placement": "placement",
    "termSentAt": "termSentAt",
}
DROPPED_KEYS = {"tuning", "parentJobPk", "labelsVersion", "cancelRequestedAt", "slots"}


def _load(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return json.loads(value) or {}
    return dict(value)


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default="training"))
        batch.add_column(sa.Column("parent_pk", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("input", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("output", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("labels_version", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("scheduling", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("kind_state", sa.JSON(), nullable=True))
    op.create_index("ix_jobs_parent_pk", "jobs", ["parent_pk"])

    bind = op.get_bind()
    jobs = sa.table(
        "jobs", sa.column("id", sa.Integer), sa.column("training_input", sa.JSON),
        sa.column("training_output", sa.JSON), sa.column("internal", sa.JSON),
        sa.column("kind", sa.String), sa.column("parent_pk", sa.Integer), sa.column("input", sa.JSON),
        sa.column("output", sa.JSON), sa.column("labels_version", sa.Integer),
        sa.column("scheduling", sa.JSON), sa.column("kind_state", sa.JSON),
    )
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.training_input, jobs.c.training_output,
                                  jobs.c.internal)).fetchall()
    for pk, training_input, training_output, internal_raw in rows:
        internal = _load(internal_raw)
        scheduling = {new: internal[old] for old, new in SCHEDULING_KEYS.items() if old in internal}
        if "slots" in internal and "demand" not in internal:
            scheduling["demand"] = {"cpus": float(internal["slots"]), "memoryGb": 0.0, "gpus": 0}
        kind_state = {k: v for k, v in internal.items() if k not in SCHEDULING_KEYS and k not in DROPPED_KEYS}
        parent = internal.get("parentJobPk")
        kind = "tuning" if internal.get("tuning") else "trial" if parent is not None else "training"
        bind.execute(jobs.update().where(jobs.c.id == pk).values(
            kind=kind, parent_pk=parent, input=_load(training_input), output=_load(training_output),
            labels_version=int(internal.get("labelsVersion", 0)), scheduling=scheduling,
            kind_state=kind_state,
        ))

    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.drop_column("training_input")
        batch.drop_column("training_output")
        batch.drop_column("internal")


def downgrade() -> None:
    raise NotImplementedError("mlengine's schema cannot be downgraded below 0004; restore a backup")
