"""Controller notices and breach incidents (issue 18): contacts (sealed address and webhook secret),
notices (facts: ids, counts, categories), one delivery row per notice and contact, incidents and the
tenants each concerns.

Revision ID: 0015_notices
Revises: 0012_reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_notices"
down_revision = "0012_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice_contacts",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("target_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id", name="pk_notice_contacts"),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("throttle_key", sa.String(255), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notices"),
    )
    op.create_index("ix_notices_throttle", "notices", ["tenant", "kind", "throttle_key", "created"])
    op.create_table(
        "notice_deliveries",
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(255), nullable=False),
        sa.Column("delivered", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("notice_id", "contact_id", name="pk_notice_deliveries"),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("summary", sa.String(255), nullable=False),
        sa.Column("became_aware", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_table(
        "incident_tenants",
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("notice_id", sa.String(64), nullable=True),
        sa.Column("notified", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("incident_id", "tenant", name="pk_incident_tenants"),
    )


def downgrade() -> None:
    op.drop_table("incident_tenants")
    op.drop_table("incidents")
    op.drop_table("notice_deliveries")
    op.drop_index("ix_notices_throttle", table_name="notices")
    op.drop_table("notices")
    op.drop_table("notice_contacts")
