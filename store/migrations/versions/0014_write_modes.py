"""Write modes (issue 14): ``syncs.write_mode`` — upsert, update-only, create-only, mirror, archive
(:class:`schemas.sync.SyncWriteMode`). Syncs stored before it propagated source deletes, so they
become ``mirror``; a new sync is ``upsert`` unless it says otherwise.

Revision ID: 0014_write_modes
Revises: 0012_reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_write_modes"
down_revision = "0012_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        batch.add_column(sa.Column("write_mode", sa.String(16), nullable=True))
    op.execute("UPDATE syncs SET write_mode = 'mirror' WHERE write_mode IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("syncs") as batch:
        batch.drop_column("write_mode")
