"""Crash-safe ``incident`` ledger events: owed in the incident's transaction, appended once.

An incident command (open, update, notify) commits its rows *and* the ledger events it owes each
tenant in one transaction (:func:`owe`, table ``incident_ledger_outbox``), then :func:`append_owed`
appends them to the tenants' ledgers. Each append is its own transaction that first claims the
outbox row (:meth:`governance.lineage.Ledger.append` with ``claim``), so:

- a failure after the commit (a crash, the database gone, tenant 2 of 3 refused) leaves the rest
  owed, and the next :func:`append_owed` — ``crmhub incident repair``, any later incident command,
  the ``crmhub-incident-watch`` schedule — appends exactly what is missing;
- an event is never appended twice: its row is keyed by incident id, step and tenant, and claimed in
  the transaction that appends it (two repairs at once: the second finds the row taken).

The event appended is the one built at the command's time (its timestamp included), so a repaired
ledger reads as if nothing had failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.engine import Connection, Engine

from governance.lineage import Ledger
from schemas.lineage import LineageEvent
from store import incident_outbox as outbox

__all__ = ["Appended", "append_owed", "owe", "owed"]


@dataclass(frozen=True, slots=True)
class Appended:
    """What :func:`append_owed` appended (``(incident id, tenant, step)``) and what was still owed."""

    appended: tuple[tuple[str, str, str], ...]
    remaining: int


def owe(conn: Connection, step: str, events: Sequence[LineageEvent], *, now: datetime) -> None:
    """Record, in the caller's transaction, that each of ``events`` (``incident`` events of one
    incident, one per tenant) is owed to its tenant's ledger under ``step``; an event already owed
    under that key is left as it is."""
    for event in events:
        incident_id = str(event.details["incident_id"])
        outbox.add_owed(
            conn,
            outbox.OutboxRow(
                outbox.outbox_key(incident_id, step, event.tenant), incident_id, event.tenant, step,
                event.canonical_bytes(), now,
            ),
        )  # fmt: skip


def owed(engine: Engine, *, incident_id: str | None = None) -> list[outbox.OutboxRow]:
    """The events not appended yet (of one incident or all), oldest first (at most 1000)."""
    with engine.connect() as conn:
        return outbox.list_owed(conn, incident_id=incident_id)


def append_owed(
    engine: Engine, *, incident_id: str | None = None, now: datetime | None = None, limit: int = 1000
) -> Appended:
    """Append every owed event (of one incident, or all; at most ``limit`` per call), oldest first.
    A failure propagates after what came before it was appended; what follows stays owed."""
    at = now or datetime.now(UTC)
    with engine.connect() as conn:
        rows = outbox.list_owed(conn, incident_id=incident_id, limit=limit)
    ledgers: dict[str, Ledger] = {}
    done: list[tuple[str, str, str]] = []
    for row in rows:
        ledger = ledgers.setdefault(row.tenant, Ledger(engine, row.tenant))
        indexes = ledger.append(
            [LineageEvent.from_canonical(row.event)], claim=partial(outbox.claim, key=row.key, now=at)
        )
        if indexes:  # empty: another repair appended it first
            done.append((row.incident_id, row.tenant, row.step))
    with engine.connect() as conn:
        remaining = len(outbox.list_owed(conn, incident_id=incident_id, limit=limit))
    return Appended(tuple(done), remaining)
