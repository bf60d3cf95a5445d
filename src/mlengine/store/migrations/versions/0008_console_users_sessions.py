"""Console sign-in: users with passwords and browser sessions

Revision ID: 0008
Revises: 0007

``console_users``: people who sign in to the web console with a name and a password (an
admin creates them: ``mle auth users create``); only a salted scrypt hash is stored.
``console_sessions``: a signed-in browser; only the SHA-256 digest of the cookie's secret is
stored, with the principal it speaks for, the CSRF token of its forms and when it expires.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_console_users_name"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(320), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=True),
        sa.Column("token_name", sa.String(64), nullable=True),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("secret_sha256", name="uq_console_sessions_secret"),
    )
    op.create_index("ix_console_sessions_user_name", "console_sessions", ["user_name"])
    op.create_index("ix_console_sessions_token_name", "console_sessions", ["token_name"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_table("console_users")
