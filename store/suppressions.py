"""The data-subject suppression list (migration ``0017_roles_suppression``): source records a pull
must never bring again, named only by the tenant's keyed hash of their source id (``kh_…``).

A row is written by a data-subject request — ``erase`` (Art. 17: an erased subject does not come
back on the next sync), ``restrict`` (Art. 18) and ``object`` (Art. 21) — and read once per pull
activity; :class:`governance.policy.PageProcessor` drops a suppressed record before anything else
sees it. ``crmhub dsr lift`` removes a restriction or objection (an erasure is never lifted).

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, Index, PrimaryKeyConstraint, String, delete, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import chunks, dialect_insert, table_of

__all__ = [
    "SUPPRESSION_REASONS",
    "SuppressionTable",
    "add_suppressions",
    "count_suppressions",
    "lift_suppressions",
    "suppressed_keys",
    "suppressions",
]

SUPPRESSION_REASONS = ("erase", "restrict", "object")
"""Why a subject is suppressed: the data-subject request kind that put them on the list."""


class SuppressionTable(SQLModel, table=True):
    """Declaration of the ``suppressions`` table (read and written through :data:`suppressions`)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "key_hash", name="pk_suppressions"),
        Index("ix_suppressions_request", "tenant", "request_id"),
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    key_hash: str = Field(sa_type=String(64), primary_key=True)
    reason: str = Field(sa_type=String(16))
    request_id: str = Field(sa_type=String(64))
    created: datetime = Field(sa_type=DateTime(timezone=True))


suppressions = table_of(SuppressionTable)


def add_suppressions(
    conn: Connection, tenant: str, key_hashes: Sequence[str], *, reason: str, request_id: str, now: datetime
) -> int:
    """Put these keyed hashes on the tenant's list (an erasure overrides a restriction or objection;
    a restriction never downgrades an erasure). Returns how many hashes were given."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"suppression reason must be one of {', '.join(SUPPRESSION_REASONS)}")
    rows = [
        {"tenant": tenant, "key_hash": k, "reason": reason, "request_id": request_id, "created": now}
        for k in dict.fromkeys(key_hashes)
    ]
    if not rows:
        return 0
    insert = dialect_insert(conn, suppressions)
    if reason == "erase":
        stmt = insert.on_conflict_do_update(
            index_elements=["tenant", "key_hash"],
            set_={"reason": insert.excluded.reason, "request_id": insert.excluded.request_id},
        )
    else:
        stmt = insert.on_conflict_do_nothing(index_elements=["tenant", "key_hash"])
    conn.execute(stmt, rows)
    return len(rows)


def suppressed_keys(conn: Connection, tenant: str) -> frozenset[str]:
    """Every keyed hash on the tenant's list (what a pull drops)."""
    stmt = select(suppressions.c.key_hash).where(suppressions.c.tenant == tenant)
    return frozenset(str(k) for k in conn.execute(stmt).scalars())


def count_suppressions(conn: Connection, tenant: str) -> dict[str, int]:
    """Rows on the tenant's list per reason."""
    t = suppressions
    stmt = select(t.c.reason, func.count()).where(t.c.tenant == tenant).group_by(t.c.reason)
    return {str(r): int(n) for r, n in conn.execute(stmt)}


def lift_suppressions(conn: Connection, tenant: str, key_hashes: Sequence[str]) -> int:
    """Remove restrictions and objections of these keyed hashes (erasures stay); returns how many."""
    t = suppressions
    return sum(
        int(
            conn.execute(
                delete(t).where(t.c.tenant == tenant, t.c.reason != "erase", t.c.key_hash.in_(chunk))
            ).rowcount
        )
        for chunk in chunks(list(dict.fromkeys(key_hashes)))
    )
