"""Tenants, instructions, syncs, runs, sealed staging, dead letters and the id map.

Revision ID: 0006_syncs
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_syncs"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("home_region", sa.String(32), nullable=False),
        sa.Column("authorised_subprocessors", sa.JSON(), nullable=False),
        _ts("created"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "instructions",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=False),
        _ts("created"),
        sa.PrimaryKeyConstraint("tenant", "version", name="pk_instructions"),
    )
    op.create_table(
        "syncs",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("source_connection_id", sa.String(64), nullable=False),
        sa.Column("source_stream", sa.String(128), nullable=False),
        sa.Column("source_endpoint", sa.String(64), nullable=True),
        sa.Column("destination_connection_id", sa.String(64), nullable=False),
        sa.Column("destination_stream", sa.String(128), nullable=False),
        sa.Column("destination_endpoint", sa.String(64), nullable=True),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("destination_id_property", sa.String(128), nullable=False),
        sa.Column("source_key_property", sa.String(128), nullable=False),
        sa.Column("transforms", sa.JSON(), nullable=False),
        sa.Column("instruction_version", sa.Integer(), nullable=False),
        sa.Column("default_mode", sa.String(16), nullable=True),
        sa.Column("cursor", sa.JSON(), nullable=True),
        sa.Column("last_run_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        _ts("created"),
        _ts("updated"),
        sa.PrimaryKeyConstraint("tenant", "id", name="pk_syncs"),
    )
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        _ts("started"),
        _ts("finished", nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_sync", "sync_runs", ["tenant", "sync_id", "started"])
    op.create_table(
        "staging_batches",
        sa.Column("batch_id", sa.String(200), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("deleted_keys", sa.LargeBinary(), nullable=True),
        _ts("created"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("batch_id", "part", name="pk_staging_batches"),
    )
    op.create_index("ix_staging_batches_expires", "staging_batches", ["expires_at"])
    op.create_index("ix_staging_batches_run", "staging_batches", ["tenant", "sync_id", "run_id"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(200), nullable=False),
        sa.Column("record_key_hash", sa.String(64), nullable=False),
        sa.Column("sealed_record", sa.LargeBinary(), nullable=False),
        sa.Column("error_code", sa.String(128), nullable=False),
        sa.Column("error_message", sa.String(500), nullable=False),
        _ts("created"),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_sync", "dead_letters", ["tenant", "sync_id", "run_id"])
    op.create_table(
        "id_map",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sync_id", sa.String(128), nullable=False),
        sa.Column("source_key_hash", sa.String(64), nullable=False),
        sa.Column("destination_id", sa.String(255), nullable=False),
        _ts("updated"),
        sa.PrimaryKeyConstraint("tenant", "sync_id", "source_key_hash", name="pk_id_map"),
    )


def downgrade() -> None:
    op.drop_table("id_map")
    op.drop_index("ix_dead_letters_sync", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_staging_batches_run", table_name="staging_batches")
    op.drop_index("ix_staging_batches_expires", table_name="staging_batches")
    op.drop_table("staging_batches")
    op.drop_index("ix_sync_runs_sync", table_name="sync_runs")
    op.drop_table("sync_runs")
    op.drop_table("syncs")
    op.drop_table("instructions")
    op.drop_table("tenants")
