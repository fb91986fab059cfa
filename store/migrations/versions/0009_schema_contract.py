"""The type contract of syncs and runs (schema drift): the field types a sync's runs accepted under
its instruction, each run's planned source schema and the drift it already reported.

Revision ID: 0009_schema_contract
Revises: 0006_syncs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_schema_contract"
down_revision = "0006_syncs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        batch.add_column(sa.Column("accepted_types", sa.JSON(), nullable=True))
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("planned_schema", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("drift", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("drift")
        batch.drop_column("planned_schema")
    with op.batch_alter_table("syncs") as batch:
        batch.drop_column("accepted_types")
