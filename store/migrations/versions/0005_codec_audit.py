"""Codec server audit trail (who decoded which namespace's payloads, when).

Revision ID: 0005_codec_audit
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_codec_audit"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "codec_audit",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("payloads", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("client", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_codec_audit"),
    )
    op.create_index("ix_codec_audit_namespace_at", "codec_audit", ["namespace", "at"])


def downgrade() -> None:
    op.drop_index("ix_codec_audit_namespace_at", table_name="codec_audit")
    op.drop_table("codec_audit")
