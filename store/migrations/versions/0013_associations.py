"""Relationships (issue 14): the links a sync wrote (``association_links``) and the children waiting
for their parent's destination record (``association_deferrals``, indexed by the parent they wait
for), keyed hashes and destination ids only.

Revision ID: 0013_associations
Revises: 0012_reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_associations"
down_revision = "0012_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "association_links",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("child_key_hash", sa.String(64), nullable=False),
        sa.Column("child_id", sa.String(255), nullable=False),
        sa.Column("parent_id", sa.String(255), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "sync_id", "field", "child_key_hash", name="pk_association_links"),
    )
    op.create_table(
        "association_deferrals",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("child_key_hash", sa.String(64), nullable=False),
        sa.Column("child_id", sa.String(255), nullable=False),
        sa.Column("child_stream", sa.String(128), nullable=False),
        sa.Column("parent_stream", sa.String(128), nullable=False),
        sa.Column("parent_sync_id", sa.String(128), nullable=False),
        sa.Column("parent_key_hash", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_deferred", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "sync_id", "field", "child_key_hash", name="pk_association_deferrals"
        ),
    )
    op.create_index(
        "ix_association_deferrals_parent",
        "association_deferrals",
        ["tenant", "parent_sync_id", "parent_key_hash"],
    )


def downgrade() -> None:
    op.drop_index("ix_association_deferrals_parent", table_name="association_deferrals")
    op.drop_table("association_deferrals")
    op.drop_table("association_links")
