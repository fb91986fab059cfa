"""Roles and data-subject suppression (issue 18): every web user has a role (``admin`` · ``editor`` ·
``viewer``; existing users become admins), and the ``suppressions`` list names the source records
of restricted, objecting or erased subjects by keyed hash only, so a pull never brings them again.

Revision ID: 0017_roles_suppression
Revises: 0010_web_accounts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_roles_suppression"
down_revision = "0010_web_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("web_users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="admin"))
    op.create_table(
        "suppressions",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "key_hash", name="pk_suppressions"),
    )
    op.create_index("ix_suppressions_request", "suppressions", ["tenant", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_suppressions_request", table_name="suppressions")
    op.drop_table("suppressions")
    with op.batch_alter_table("web_users") as batch:
        batch.drop_column("role")
