"""Incident ledger outbox (issue 18 item 3): the ``incident`` ledger events an incident command owes
each tenant, recorded in the incident's own transaction and marked appended in the transaction
that appends each one to the tenant's ledger (``store.incident_outbox``), so an append that fails
partway is repaired by ``crmhub incident repair`` and never doubled.

Revision ID: 0023_incident_outbox
Revises: 0021_incidents
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_incident_outbox"
down_revision = "0021_incidents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_ledger_outbox",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appended", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_incident_ledger_outbox"),
    )
    op.create_index("ix_incident_ledger_outbox_appended", "incident_ledger_outbox", ["appended"])


def downgrade() -> None:
    op.drop_index("ix_incident_ledger_outbox_appended", table_name="incident_ledger_outbox")
    op.drop_table("incident_ledger_outbox")
