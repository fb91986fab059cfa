"""Breach incidents (issue 18 item 3): what ``crmhub incident open`` records beside the columns
0015 made — the nature of the breach, the window and scope it was opened over, the free-text
consequences and measures a controller's Art. 33(3) report needs, and per affected tenant the record
count, how subjects were counted, the fields concerned (names, never values) and the syncs.

Revision ID: 0021_incidents
Revises: 0015_notices
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_incidents"
down_revision = "0015_notices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("nature", sa.String(32), nullable=False, server_default=""))
    op.add_column("incidents", sa.Column("window_from", sa.DateTime(timezone=True), nullable=True))
    op.add_column("incidents", sa.Column("window_to", sa.DateTime(timezone=True), nullable=True))
    op.add_column("incidents", sa.Column("scope", sa.JSON(), nullable=True))
    op.add_column("incidents", sa.Column("consequences", sa.String(2000), nullable=False, server_default=""))
    op.add_column("incidents", sa.Column("measures", sa.String(2000), nullable=False, server_default=""))
    op.add_column("incidents", sa.Column("updated", sa.DateTime(timezone=True), nullable=True))
    op.add_column("incident_tenants", sa.Column("records", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "incident_tenants",
        sa.Column("subjects_basis", sa.String(16), nullable=False, server_default="keyed_hashes"),
    )
    op.add_column("incident_tenants", sa.Column("fields", sa.JSON(), nullable=True))
    op.add_column("incident_tenants", sa.Column("syncs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incident_tenants") as batch:
        for name in ("syncs", "fields", "subjects_basis", "records"):
            batch.drop_column(name)
    with op.batch_alter_table("incidents") as batch:
        for name in ("updated", "measures", "consequences", "scope", "window_to", "window_from", "nature"):
            batch.drop_column(name)
