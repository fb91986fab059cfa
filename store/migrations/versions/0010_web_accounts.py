"""Web accounts: users can be disabled (``web_users.disabled_at``); the login rate limit counts in one
row per key (``web_login_attempts``, updated atomically) instead of a row per failure.

Revision ID: 0010_web_accounts
Revises: 0007_users
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_web_accounts"
down_revision = "0007_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("web_users") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_web_sessions_user", "web_sessions", ["user_id"])
    # the old per-failure rows are only a few minutes of rate-limit state: dropped, not converted
    op.drop_index("ix_web_login_failures_key", table_name="web_login_failures")
    op.drop_table("web_login_failures")
    op.create_table(
        "web_login_attempts",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name="pk_web_login_attempts"),
    )
    op.create_index("ix_web_login_attempts_window", "web_login_attempts", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_web_login_attempts_window", table_name="web_login_attempts")
    op.drop_table("web_login_attempts")
    op.create_table(
        "web_login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_login_failures"),
    )
    op.create_index("ix_web_login_failures_key", "web_login_failures", ["key_hash", "at"])
    op.drop_index("ix_web_sessions_user", table_name="web_sessions")
    with op.batch_alter_table("web_users") as batch:
        batch.drop_column("disabled_at")
