"""Delete reconciliation (issue 13): a sync's pending need to reconcile (``syncs.reconcile``, set when
the source could no longer prove it reported every delete), the source ids a reconciliation listed
(``reconcile_listing``, keyed hashes only), and the reverse lookup of the id map (destination id →
source keys) the merge guard asks.

Revision ID: 0012_reconcile
Revises: 0009_schema_contract
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_reconcile"
down_revision = "0009_schema_contract"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        batch.add_column(sa.Column("reconcile", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reconcile_requested", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_id_map_destination", "id_map", ["tenant", "sync_id", "destination_id"])
    op.create_table(
        "reconcile_listing",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("source_key_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant", "sync_id", "run_id", "source_key_hash", name="pk_reconcile_listing"
        ),
    )


def downgrade() -> None:
    op.drop_table("reconcile_listing")
    op.drop_index("ix_id_map_destination", table_name="id_map")
    with op.batch_alter_table("syncs") as batch:
        batch.drop_column("reconcile_requested")
        batch.drop_column("reconcile")
