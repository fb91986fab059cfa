"""Auditor API tokens, the audit access log, and sealed data-subject-request exports.

Revision ID: 0008_auditors
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_auditors"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auditor_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("created"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _ts("last_used", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auditor_tokens"),
    )
    op.create_index("ix_auditor_tokens_tenant", "auditor_tokens", ["tenant"])
    op.create_table(
        "audit_access_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        _ts("at"),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("route", sa.String(255), nullable=False),
        sa.Column("query", sa.String(500), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("client", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_access_log"),
    )
    op.create_index("ix_audit_access_log_tenant", "audit_access_log", ["tenant", "at"])
    op.create_table(
        "dsr_exports",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        _ts("created"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("request_id", name="pk_dsr_exports"),
    )


def downgrade() -> None:
    op.drop_table("dsr_exports")
    op.drop_index("ix_audit_access_log_tenant", table_name="audit_access_log")
    op.drop_table("audit_access_log")
    op.drop_index("ix_auditor_tokens_tenant", table_name="auditor_tokens")
    op.drop_table("auditor_tokens")
