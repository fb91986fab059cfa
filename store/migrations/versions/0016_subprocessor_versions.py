"""The versioned subprocessor registry (issue 18, Art. 28(2)): ``subprocessor_versions`` (each
version's content, hash, objection window, when applied) and ``subprocessor_objections`` (a tenant's
objection to a version and its choice, keep or stop).

Revision ID: 0016_subprocessor_versions
Revises: 0006_syncs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_subprocessor_versions"
down_revision = "0006_syncs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subprocessor_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("proposed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_closes", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("version", name="pk_subprocessor_versions"),
    )
    op.create_table(
        "subprocessor_objections",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("objected", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("version", "tenant", name="pk_subprocessor_objections"),
    )


def downgrade() -> None:
    op.drop_table("subprocessor_objections")
    op.drop_table("subprocessor_versions")
