"""Web app users, their server-side sessions and failed logins (for the login rate limit).

Revision ID: 0007_users
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_users"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("email_hash", sa.String(80), nullable=False),
        sa.Column("email_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _ts("created"),
        _ts("last_login", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_users"),
        sa.UniqueConstraint("tenant", "email_hash", name="uq_web_users_tenant_email"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("oauth_pending", sa.JSON(), nullable=False),
        _ts("created"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("id_hash", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires_at"])
    op.create_table(
        "web_login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id", name="pk_web_login_failures"),
    )
    op.create_index("ix_web_login_failures_key", "web_login_failures", ["key_hash", "at"])


def downgrade() -> None:
    op.drop_index("ix_web_login_failures_key", table_name="web_login_failures")
    op.drop_table("web_login_failures")
    op.drop_index("ix_web_sessions_expires", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
