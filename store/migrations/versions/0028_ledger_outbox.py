"""Ledger outbox for any owed event (issue 18): ``incident_ledger_outbox`` (0023) becomes
``ledger_outbox``, keyed by ``kind | ref | step | tenant``, so the ``notice`` events a notice enqueue
or delivery owes are recorded in its own transaction and appended once, like the ``incident`` events
(``store.ledger_outbox``). The incident rows are copied over (``kind='incident'``, their key and id
prefixed), owed or appended alike. A downgrade keeps the incident rows and drops the notice rows.

Revision ID: 0028_ledger_outbox
Revises: 0023_incident_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028_ledger_outbox"
down_revision = "0023_incident_outbox"
branch_labels = None
depends_on = None


def _create_outbox(name: str, *about: sa.Column[str]) -> None:
    """An outbox table as 0023 made it, with ``about`` (what the events are about) after the key."""
    op.create_table(
        name,
        sa.Column("key", sa.String(255), nullable=False),
        *about,
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("event", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appended", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=f"pk_{name}"),
    )
    op.create_index(f"ix_{name}_appended", name, ["appended"])


def upgrade() -> None:
    _create_outbox(
        "ledger_outbox",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
    )
    op.create_index("ix_ledger_outbox_ref", "ledger_outbox", ["ref"])
    op.execute(
        "INSERT INTO ledger_outbox (key, kind, ref, tenant, step, event, created, appended) "
        "SELECT 'incident|' || key, 'incident', incident_id, tenant, step, event, created, appended "
        "FROM incident_ledger_outbox"
    )
    op.drop_index("ix_incident_ledger_outbox_appended", table_name="incident_ledger_outbox")
    op.drop_table("incident_ledger_outbox")


def downgrade() -> None:
    _create_outbox("incident_ledger_outbox", sa.Column("incident_id", sa.String(64), nullable=False))
    op.execute(
        "INSERT INTO incident_ledger_outbox (key, incident_id, tenant, step, event, created, appended) "
        "SELECT substr(key, 10), ref, tenant, step, event, created, appended "  # past "incident|"
        "FROM ledger_outbox WHERE kind = 'incident'"
    )
    op.drop_index("ix_ledger_outbox_ref", table_name="ledger_outbox")
    op.drop_index("ix_ledger_outbox_appended", table_name="ledger_outbox")
    op.drop_table("ledger_outbox")
