"""IAM: policies per resource, service accounts, tokens as principals (merges 0005 and 0006)

Revision ID: 0007
Revises: 0005, 0006

Tokens stop carrying a role. Each token speaks for a principal (``user:<name>``), may belong to
groups, and may have been made for a job (``job_pk``). The role of every existing token becomes
a binding of the server-wide policy (resource ``server``, which every project inherits):
admin → roles/ml.admin, editor → roles/ml.developer, viewer → roles/ml.viewer. Downgrading
gives each token back the strongest of those roles its principal holds there (viewer if none).
"""

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = ("0005", "0006")
branch_labels = None
depends_on = None

LEGACY = {"admin": "roles/ml.admin", "editor": "roles/ml.developer", "viewer": "roles/ml.viewer"}
SERVER = "server"


def _load(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return list(json.loads(value) or [])
    return list(value)


def upgrade() -> None:
    op.create_table(
        "iam_policies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("resource", sa.String(512), nullable=False),
        sa.Column("bindings", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("resource", name="uq_iam_policies_resource"),
    )
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "account_id", name="uq_service_accounts_project_id"),
    )
    op.create_index("ix_service_accounts_project", "service_accounts", ["project"])
    with op.batch_alter_table("tokens", recreate="never") as batch:
        batch.add_column(sa.Column("principal", sa.String(320), nullable=False, server_default=""))
        batch.add_column(sa.Column("groups", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("job_pk", sa.Integer(), nullable=True))
    op.create_index("ix_tokens_job_pk", "tokens", ["job_pk"])

    bind = op.get_bind()
    tokens = sa.table("tokens", sa.column("id", sa.Integer), sa.column("name", sa.String),
                      sa.column("role", sa.String), sa.column("principal", sa.String),
                      sa.column("groups", sa.JSON))
    members: dict[str, list[str]] = {}
    for pk, name, role in bind.execute(sa.select(tokens.c.id, tokens.c.name, tokens.c.role).order_by(tokens.c.id)):
        principal = f"user:{name}"
        bind.execute(tokens.update().where(tokens.c.id == pk).values(principal=principal, groups=[]))
        members.setdefault(LEGACY.get(role, "roles/ml.viewer"), []).append(principal)
    if members:
        policies = sa.table("iam_policies", sa.column("resource", sa.String), sa.column("bindings", sa.JSON),
                            sa.column("revision", sa.Integer), sa.column("update_time", sa.DateTime(timezone=True)))
        bindings = [{"role": role, "members": names} for role, names in sorted(members.items())]
        bind.execute(policies.insert().values(resource=SERVER, bindings=bindings, revision=1,
                                              update_time=dt.datetime.now(dt.timezone.utc)))
    with op.batch_alter_table("tokens", recreate="never") as batch:
        batch.drop_column("role")


def downgrade() -> None:
    with op.batch_alter_table("tokens", recreate="never") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="viewer"))
    bind = op.get_bind()
    policies = sa.table("iam_policies", sa.column("resource", sa.String), sa.column("bindings", sa.JSON))
    server = bind.execute(sa.select(policies.c.bindings).where(policies.c.resource == SERVER)).scalar()
    strongest: dict[str, str] = {}
    rank = {"roles/owner": "admin", "roles/ml.admin": "admin", "roles/editor": "editor",
            "roles/ml.developer": "editor"}
    order = ("viewer", "editor", "admin")
    for binding in _load(server):
        role = rank.get(binding.get("role"), "viewer")
        for member in binding.get("members") or []:
            if order.index(role) > order.index(strongest.get(member, "viewer")):
                strongest[member] = role
    tokens = sa.table("tokens", sa.column("id", sa.Integer), sa.column("principal", sa.String),
                      sa.column("role", sa.String), sa.column("job_pk", sa.Integer))
    bind.execute(tokens.delete().where(tokens.c.job_pk.is_not(None)))  # jobs' tokens have no role to go back to
    for pk, principal in bind.execute(sa.select(tokens.c.id, tokens.c.principal)).fetchall():
        bind.execute(tokens.update().where(tokens.c.id == pk).values(role=strongest.get(principal, "viewer")))
    op.drop_index("ix_tokens_job_pk", table_name="tokens")
    with op.batch_alter_table("tokens", recreate="never") as batch:
        batch.drop_column("principal")
        batch.drop_column("groups")
        batch.drop_column("job_pk")
    op.drop_index("ix_service_accounts_project", table_name="service_accounts")
    op.drop_table("service_accounts")
    op.drop_table("iam_policies")
