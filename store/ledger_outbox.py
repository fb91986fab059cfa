"""Ledger outbox (migration ``0028_ledger_outbox``, generalising ``0023_incident_outbox``): ledger
events a command owes a tenant, written in the same transaction as the rows they record, then
appended to the tenant's ledger one by one (:mod:`services.ledger_outbox`). Today ``incident`` events
(:mod:`services.incidents`) and ``notice`` events (:mod:`services.notices`).

A row is keyed by ``kind | ref | step | tenant``: ``kind`` is the ledger event kind, ``ref`` the id of
what the event is about (an incident or a notice id), ``step`` the event's place in its life
(``became_aware``, ``notified``, ``updated@<time>``; ``enqueued``, ``delivered:<contact>:<attempt>``
…), so an event is owed once whatever is retried. ``appended`` is set in the transaction that appends
the event to the ledger (:meth:`governance.lineage.Ledger.append` with a claim), so a crash between
the two never leaves an event appended twice or a row marked done without its event. Rows stay after
the append: what was owed and when it reached the ledger. The event bytes are the canonical ledger
event (ids, counts, categories, field names: no PII, no secret).

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, PrimaryKeyConstraint, String, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import as_bytes, dialect_insert, required_aware, table_of

__all__ = [
    "LedgerOutboxTable",
    "OutboxRow",
    "add_owed",
    "claim",
    "ledger_outbox",
    "list_owed",
    "outbox_key",
]


class LedgerOutboxTable(SQLModel, table=True):
    """Declaration of ``ledger_outbox``."""

    __tablename__ = "ledger_outbox"
    __table_args__ = (
        PrimaryKeyConstraint("key", name="pk_ledger_outbox"),
        Index("ix_ledger_outbox_appended", "appended"),
        Index("ix_ledger_outbox_ref", "ref"),
    )

    key: str = Field(sa_type=String(255), primary_key=True)
    kind: str = Field(sa_type=String(32))
    ref: str = Field(sa_type=String(64))
    tenant: str = Field(sa_type=String(128))
    step: str = Field(sa_type=String(64))
    event: bytes = Field(sa_type=LargeBinary)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    appended: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


ledger_outbox = table_of(LedgerOutboxTable)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    key: str
    kind: str
    ref: str
    tenant: str
    step: str
    event: bytes
    created: datetime


def outbox_key(kind: str, ref: str, step: str, tenant: str) -> str:
    """The row key: one event per kind, incident or notice, step and tenant."""
    return f"{kind}|{ref}|{step}|{tenant}"


def add_owed(conn: Connection, row: OutboxRow) -> bool:
    """Record an owed event; False when one of that key is already owed or appended (nothing written)."""
    values = {
        "key": row.key, "kind": row.kind, "ref": row.ref, "tenant": row.tenant, "step": row.step,
        "event": row.event, "created": row.created, "appended": None,
    }  # fmt: skip
    done = conn.execute(dialect_insert(conn, ledger_outbox).values(**values).on_conflict_do_nothing())
    return bool(done.rowcount)


def list_owed(
    conn: Connection, *, kind: str | None = None, ref: str | None = None, limit: int = 1000
) -> list[OutboxRow]:
    """Events not appended yet (of one kind, of one incident or notice, or all), oldest first, at
    most ``limit``."""
    q = (
        select(ledger_outbox)
        .where(ledger_outbox.c.appended.is_(None))
        .order_by(ledger_outbox.c.created, ledger_outbox.c.key)
        .limit(limit)
    )
    if kind is not None:
        q = q.where(ledger_outbox.c.kind == kind)
    if ref is not None:
        q = q.where(ledger_outbox.c.ref == ref)
    out: list[OutboxRow] = []
    for m in conn.execute(q).mappings():
        event, created = as_bytes(m["event"]), required_aware(m["created"])
        assert event is not None  # NOT NULL
        out.append(OutboxRow(m["key"], m["kind"], m["ref"], m["tenant"], m["step"], event, created))
    return out


def claim(conn: Connection, key: str, now: datetime) -> bool:
    """Mark the row appended in the caller's transaction; False when it already was (or is not owed).
    On PostgreSQL a concurrent claimer waits on the row lock and then finds it taken."""
    done = conn.execute(
        update(ledger_outbox)
        .where(ledger_outbox.c.key == key, ledger_outbox.c.appended.is_(None))
        .values(appended=now)
    )
    return bool(done.rowcount)
