"""Incident ledger outbox (migration ``0023_incident_outbox``): the ``incident`` ledger events an
incident command owes each tenant, written in the same transaction as the incident rows they
record, then appended to the tenant's ledger one by one (:mod:`services.incident_ledger`).

A row is keyed by ``incident id | step | tenant`` (``step`` is ``became_aware``, ``notified`` or
``updated@<time>``), so an event is owed once whatever is retried. ``appended`` is set in the
transaction that appends the event to the ledger (:meth:`governance.lineage.Ledger.append` with a
claim), so a crash between the two never leaves an event appended twice or a row marked done without
its event. Rows stay after the append: what was owed and when it reached the ledger. The event bytes
are the canonical ledger event (ids, counts, categories, field names: no PII, no secret).

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
    "IncidentOutboxTable",
    "OutboxRow",
    "add_owed",
    "claim",
    "incident_outbox",
    "list_owed",
    "outbox_key",
]


class IncidentOutboxTable(SQLModel, table=True):
    """Declaration of ``incident_ledger_outbox``."""

    __tablename__ = "incident_ledger_outbox"
    __table_args__ = (
        PrimaryKeyConstraint("key", name="pk_incident_ledger_outbox"),
        Index("ix_incident_ledger_outbox_appended", "appended"),
    )

    key: str = Field(sa_type=String(255), primary_key=True)
    incident_id: str = Field(sa_type=String(64))
    tenant: str = Field(sa_type=String(128))
    step: str = Field(sa_type=String(64))
    event: bytes = Field(sa_type=LargeBinary)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    appended: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


incident_outbox = table_of(IncidentOutboxTable)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    key: str
    incident_id: str
    tenant: str
    step: str
    event: bytes
    created: datetime


def outbox_key(incident_id: str, step: str, tenant: str) -> str:
    """The row key: one event per incident, step and tenant."""
    return f"{incident_id}|{step}|{tenant}"


def add_owed(conn: Connection, row: OutboxRow) -> bool:
    """Record an owed event; False when one of that key is already owed or appended (nothing written)."""
    values = {
        "key": row.key, "incident_id": row.incident_id, "tenant": row.tenant, "step": row.step,
        "event": row.event, "created": row.created, "appended": None,
    }  # fmt: skip
    done = conn.execute(dialect_insert(conn, incident_outbox).values(**values).on_conflict_do_nothing())
    return bool(done.rowcount)


def list_owed(conn: Connection, *, incident_id: str | None = None, limit: int = 1000) -> list[OutboxRow]:
    """Events not appended yet (of one incident or all), oldest first, at most ``limit``."""
    q = (
        select(incident_outbox)
        .where(incident_outbox.c.appended.is_(None))
        .order_by(incident_outbox.c.created, incident_outbox.c.key)
        .limit(limit)
    )
    if incident_id is not None:
        q = q.where(incident_outbox.c.incident_id == incident_id)
    out: list[OutboxRow] = []
    for m in conn.execute(q).mappings():
        event, created = as_bytes(m["event"]), required_aware(m["created"])
        assert event is not None  # NOT NULL
        out.append(OutboxRow(m["key"], m["incident_id"], m["tenant"], m["step"], event, created))
    return out


def claim(conn: Connection, key: str, now: datetime) -> bool:
    """Mark the row appended in the caller's transaction; False when it already was (or is not owed).
    On PostgreSQL a concurrent claimer waits on the row lock and then finds it taken."""
    done = conn.execute(
        update(incident_outbox)
        .where(incident_outbox.c.key == key, incident_outbox.c.appended.is_(None))
        .values(appended=now)
    )
    return bool(done.rowcount)
