"""Denied audit API requests aggregated per hour, reason and client hash; no client address at rest.

Revision ID: 0019_access_log_bounds
Revises: 0008_auditors

The existing denied rows of ``audit_access_log`` are folded into ``audit_access_denied`` (per hour
and outcome, client unknown: ``-``) and deleted; every stored client address is cleared (the keyed
hash that replaces it needs the vault's key, which a migration does not hold).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0019_access_log_bounds"
down_revision = "0008_auditors"
branch_labels = None
depends_on = None


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    denied = op.create_table(
        "audit_access_denied",
        _ts("bucket"),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("client_hash", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        _ts("first_at"),
        _ts("last_at"),
        sa.Column("route", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "reason", "client_hash", name="pk_audit_access_denied"),
    )
    assert denied is not None
    log = sa.table(
        "audit_access_log",
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("route", sa.String()),
        sa.column("outcome", sa.String()),
        sa.column("client", sa.String()),
    )
    bind = op.get_bind()
    counts: dict[datetime, int] = {}
    first: dict[datetime, datetime] = {}
    last: dict[datetime, tuple[datetime, str]] = {}
    for at, route in bind.execute(sa.select(log.c.at, log.c.route).where(log.c.outcome == "denied")):
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        bucket = at.replace(minute=0, second=0, microsecond=0)
        counts[bucket] = counts.get(bucket, 0) + 1
        first[bucket] = min(first.get(bucket, at), at)
        last[bucket] = max(last.get(bucket, (at, route)), (at, route))
    rows = [
        {"bucket": b, "reason": "rejected", "client_hash": "-", "count": n, "first_at": first[b],
         "last_at": last[b][0], "route": last[b][1]}
        for b, n in counts.items()
    ]  # fmt: skip
    if rows:
        bind.execute(denied.insert(), rows)
    bind.execute(sa.delete(log).where(log.c.outcome == "denied"))
    bind.execute(sa.update(log).values(client=None))


def downgrade() -> None:
    op.drop_table("audit_access_denied")
