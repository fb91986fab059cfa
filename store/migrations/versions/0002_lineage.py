"""Lineage ledger: events (Merkle leaves), per-tenant heads, signed checkpoints.

Revision ID: 0002_lineage
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_lineage"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_heads",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant", name="pk_lineage_heads"),
    )
    op.create_table(
        "lineage_events",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(256), nullable=False),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "idx", name="pk_lineage_events"),
    )
    op.create_index("ix_lineage_events_run", "lineage_events", ["tenant", "run_id"])
    op.create_table(
        "lineage_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lineage_checkpoints_size", "lineage_checkpoints", ["tenant", "size"])


def downgrade() -> None:
    op.drop_index("ix_lineage_checkpoints_size", table_name="lineage_checkpoints")
    op.drop_table("lineage_checkpoints")
    op.drop_index("ix_lineage_events_run", table_name="lineage_events")
    op.drop_table("lineage_events")
    op.drop_table("lineage_heads")
