"""Vault: wrapped tenant keys (data keys and pseudonym keys).

Revision ID: 0003_vault
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_vault"
down_revision = "0001_base"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_tenant_keys",
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("kek_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("uses_reserved", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "kind", "version", name="pk_vault_tenant_keys"),
    )
    op.create_index("ix_vault_tenant_keys_status", "vault_tenant_keys", ["tenant", "kind", "status"])


def downgrade() -> None:
    op.drop_index("ix_vault_tenant_keys_status", table_name="vault_tenant_keys")
    op.drop_table("vault_tenant_keys")
