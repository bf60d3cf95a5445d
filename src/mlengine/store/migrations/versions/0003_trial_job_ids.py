"""longer job ids (trials of tuning jobs are ``<parent>/trials/<n>``)

Revision ID: 0003
Revises: 0002

(Renumbered by the lead: the serving migration took 0002; revisions form one chain.)
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths; rebuilding its table (batch mode) would only
    # risk the replicas' foreign keys, so the change is PostgreSQL's alone.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "job_id", type_=sa.String(255), existing_type=sa.String(128),
                        existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "job_id", type_=sa.String(128), existing_type=sa.String(255),
                        existing_nullable=False)
