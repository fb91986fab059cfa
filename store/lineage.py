"""Ledger tables and the small functions that touch them.

Tables (migration ``0002_lineage``): ``lineage_heads`` holds each tenant's ledger size;
``lineage_events`` holds one row per ledger entry: (tenant, idx) is unique and, per tenant, the
indexes are exactly ``0..size-1`` — :func:`reserve_indexes` hands out contiguous ranges under a
row lock on the tenant's ``lineage_heads`` row, in the same transaction as the inserts, so a
failed append leaves neither a gap nor a duplicate. ``event`` is the canonical event bytes (the
Merkle leaf input) and ``leaf_hash`` its RFC 9162 leaf hash. ``lineage_checkpoints`` keeps every
signed checkpoint.

Rows are never updated or deleted by crmhub; tampering with them is what verification detects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import dialect_insert, table_of

__all__ = [
    "CheckpointRow",
    "EventRow",
    "LineageCheckpointTable",
    "LineageEventTable",
    "LineageHeadTable",
    "checkpoints",
    "events",
    "head_size",
    "heads",
    "insert_checkpoint",
    "insert_events",
    "latest_checkpoint",
    "list_checkpoints",
    "read_event_rows",
    "read_leaf_hashes",
    "reserve_indexes",
]


class LineageHeadTable(SQLModel, table=True):
    """Declaration of the ``lineage_heads`` table (read and written through :data:`heads`)."""

    __tablename__ = "lineage_heads"
    __table_args__ = (PrimaryKeyConstraint("tenant", name="pk_lineage_heads"),)

    tenant: str = Field(sa_type=String(128), primary_key=True)
    size: int = Field(sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class LineageEventTable(SQLModel, table=True):
    """Declaration of the ``lineage_events`` table (read and written through :data:`events`)."""

    __tablename__ = "lineage_events"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "idx", name="pk_lineage_events"),
        Index("ix_lineage_events_run", "tenant", "run_id"),
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    leaf_hash: bytes = Field(sa_type=LargeBinary(32))
    kind: str = Field(sa_type=String(16))
    run_id: str = Field(sa_type=String(256))
    event: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class LineageCheckpointTable(SQLModel, table=True):
    """Declaration of the ``lineage_checkpoints`` table (read and written through :data:`checkpoints`).

    Its primary key has no name: migration ``0002_lineage`` created it unnamed."""

    __tablename__ = "lineage_checkpoints"
    __table_args__ = (Index("ix_lineage_checkpoints_size", "tenant", "size"),)

    id: int = Field(sa_type=Integer, primary_key=True)
    tenant: str = Field(sa_type=String(128))
    origin: str = Field(sa_type=String(256))
    size: int = Field(sa_type=BigInteger)
    root_hash: bytes = Field(sa_type=LargeBinary(32))
    key_id: str = Field(sa_type=String(64))
    signature: bytes = Field(sa_type=LargeBinary(64))
    signed_at: datetime = Field(sa_type=DateTime(timezone=True))


heads = table_of(LineageHeadTable)
events = table_of(LineageEventTable)
checkpoints = table_of(LineageCheckpointTable)


@dataclass(frozen=True, slots=True)
class EventRow:
    """A stored ledger entry, as read back."""

    idx: int
    leaf_hash: bytes
    event: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A stored signed checkpoint."""

    origin: str
    size: int
    root_hash: bytes
    key_id: str
    signature: bytes
    signed_at: datetime


def reserve_indexes(conn: Connection, tenant: str, count: int) -> int:
    """Reserve ``count`` indexes for ``tenant`` in the caller's transaction; returns the first.

    The ``UPDATE ... RETURNING`` takes the head row's write lock (a row lock on PostgreSQL, the
    database write lock on SQLite), so concurrent appenders queue here until the holder commits
    or rolls back. The head row is created on first use.
    """
    stmt = (
        update(heads)
        .where(heads.c.tenant == tenant)
        .values(size=heads.c.size + count)
        .returning(heads.c.size)
    )
    new_size = conn.execute(stmt).scalar_one_or_none()
    if new_size is None:
        conn.execute(dialect_insert(conn, heads).values(tenant=tenant, size=0).on_conflict_do_nothing())
        new_size = conn.execute(stmt).scalar_one()
    return int(new_size) - count


def insert_events(
    conn: Connection,
    tenant: str,
    first: int,
    rows: Sequence[tuple[bytes, str, str, bytes]],
    created_at: datetime,
) -> None:
    """Insert ``(leaf_hash, kind, run_id, event_bytes)`` rows at indexes ``first, first+1, ...``."""
    conn.execute(
        insert(events),
        [
            {
                "tenant": tenant,
                "idx": first + offset,
                "leaf_hash": leaf,
                "kind": kind,
                "run_id": run_id,
                "event": data,
                "created_at": created_at,
            }
            for offset, (leaf, kind, run_id, data) in enumerate(rows)
        ],
    )


def head_size(conn: Connection, tenant: str) -> int:
    """Number of committed entries of ``tenant`` (0 for a tenant that never appended)."""
    size = conn.execute(select(heads.c.size).where(heads.c.tenant == tenant)).scalar_one_or_none()
    return 0 if size is None else int(size)


def read_leaf_hashes(conn: Connection, tenant: str, start: int, stop: int) -> list[bytes]:
    """Leaf hashes of entries ``start..stop-1`` in index order."""
    result = conn.execute(
        select(events.c.leaf_hash)
        .where(events.c.tenant == tenant, events.c.idx >= start, events.c.idx < stop)
        .order_by(events.c.idx)
    )
    return [bytes(leaf) for leaf in result.scalars()]


def read_event_rows(
    conn: Connection, tenant: str, start: int, stop: int, *, run_id: str | None = None
) -> list[EventRow]:
    """Entries ``start..stop-1`` (optionally of one run) in index order."""
    query = select(events.c.idx, events.c.leaf_hash, events.c.event).where(
        events.c.tenant == tenant, events.c.idx >= start, events.c.idx < stop
    )
    if run_id is not None:
        query = query.where(events.c.run_id == run_id)
    result = conn.execute(query.order_by(events.c.idx))
    return [EventRow(int(r.idx), bytes(r.leaf_hash), bytes(r.event)) for r in result]


def insert_checkpoint(conn: Connection, tenant: str, row: CheckpointRow) -> None:
    """Store one signed checkpoint of ``tenant``'s ledger."""
    conn.execute(insert(checkpoints).values(tenant=tenant, **asdict(row)))


def list_checkpoints(conn: Connection, tenant: str, *, max_size: int | None = None) -> list[CheckpointRow]:
    """Checkpoints of ``tenant`` (optionally up to ``max_size``), oldest first."""
    query = select(checkpoints).where(checkpoints.c.tenant == tenant)
    if max_size is not None:
        query = query.where(checkpoints.c.size <= max_size)
    result = conn.execute(query.order_by(checkpoints.c.size, checkpoints.c.id))
    return [_checkpoint_row(r) for r in result]


def latest_checkpoint(conn: Connection, tenant: str) -> CheckpointRow | None:
    """The checkpoint of ``tenant`` with the largest size (the last stored of those), or ``None``."""
    row = conn.execute(
        select(checkpoints)
        .where(checkpoints.c.tenant == tenant)
        .order_by(checkpoints.c.size.desc(), checkpoints.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _checkpoint_row(row)


def _checkpoint_row(r: Any) -> CheckpointRow:
    return CheckpointRow(
        origin=r.origin,
        size=int(r.size),
        root_hash=bytes(r.root_hash),
        key_id=r.key_id,
        signature=bytes(r.signature),
        signed_at=r.signed_at,
    )
