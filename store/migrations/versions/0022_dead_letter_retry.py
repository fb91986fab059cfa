"""Retry of rejected records (issue 14 item 4): ``dead_letters.instruction_version`` and
``dead_letters.mapping_hash`` — the instruction version and the sync's mapping hash a record was
refused under, so the next run knows which letters a change affects. Letters stored before this
revision keep NULL (unknown): the next run retries each of them once (``store.dead_letters``).

Revision ID: 0022_dead_letter_retry
Revises: 0006_syncs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_dead_letter_retry"
down_revision = "0006_syncs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("instruction_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("mapping_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("mapping_hash")
        batch.drop_column("instruction_version")
