"""operations of any kind: kind, target, handle

Revision ID: 0006
Revises: 0004

Long-running operations stop being tied to models: ``operation_type`` becomes ``kind``, and
``model_name``/``version_name`` become ``target``, the full resource name the operation works
on (``projects/p/models/m[/versions/v]``); the model's name moves into the rendered metadata
(``metadata.modelName``). ``handle`` records the worker process of a running operation.
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def _load(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return dict(json.loads(value) or {})
    return dict(value)


def upgrade() -> None:
    with op.batch_alter_table("operations", recreate="never") as batch:
        batch.add_column(sa.Column("kind", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("target", sa.String(512), nullable=False, server_default=""))
        batch.add_column(sa.Column("handle", sa.JSON(), nullable=True))

    bind = op.get_bind()
    operations = sa.table(
        "operations", sa.column("id", sa.Integer), sa.column("project", sa.String),
        sa.column("operation_type", sa.String), sa.column("model_name", sa.String),
        sa.column("version_name", sa.String), sa.column("metadata", sa.JSON), sa.column("kind", sa.String),
        sa.column("target", sa.String), sa.column("handle", sa.JSON),
    )
    rows = bind.execute(sa.select(operations.c.id, operations.c.project, operations.c.operation_type,
                                  operations.c.model_name, operations.c.version_name,
                                  operations.c.metadata)).fetchall()
    for pk, project, operation_type, model_name, version_name, metadata in rows:
        model = f"projects/{project}/models/{model_name}"
        target = model + (f"/versions/{version_name}" if version_name else "")
        meta = _load(metadata)
        meta.setdefault("modelName", model)
        bind.execute(operations.update().where(operations.c.id == pk).values(
            kind=operation_type, target=target, metadata=meta, handle={}))

    with op.batch_alter_table("operations", recreate="never") as batch:
        batch.drop_column("operation_type")
        batch.drop_column("model_name")
        batch.drop_column("version_name")
    op.create_index("ix_operations_target", "operations", ["target"])


def downgrade() -> None:
    op.drop_index("ix_operations_target", "operations")
    with op.batch_alter_table("operations", recreate="never") as batch:
        batch.add_column(sa.Column("operation_type", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("model_name", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("version_name", sa.String(128), nullable=True))
    bind = op.get_bind()
    operations = sa.table(
        "operations", sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("target", sa.String),
        sa.column("operation_type", sa.String), sa.column("model_name", sa.String),
        sa.column("version_name", sa.String),
    )
    for pk, kind, target in bind.execute(sa.select(operations.c.id, operations.c.kind, operations.c.target)):
        parts = target.split("/")
        model = parts[3] if len(parts) > 3 else ""
        version = parts[5] if len(parts) > 5 else None
        bind.execute(operations.update().where(operations.c.id == pk).values(
            operation_type=kind[:32], model_name=model, version_name=version))
    with op.batch_alter_table("operations", recreate="never") as batch:
        batch.drop_column("kind")
        batch.drop_column("target")
        batch.drop_column("handle")
