"""Where each connection's data lives: the subprocessor registry's endpoint instance read from the
vendor at connect time (HubSpot ``dataHostingLocation``, Salesforce ``Organization.InstanceName``).

Revision ID: 0011_connection_region
Revises: 0004_connections
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_connection_region"
down_revision = "0004_connections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("region_instance", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("region_instance")
