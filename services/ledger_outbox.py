"""Crash-safe ledger events: owed in the transaction of the rows they record, appended once.

A command commits its rows *and* the ledger events it owes each tenant in one transaction
(:func:`owe`, table ``ledger_outbox``), then :func:`append_owed` appends them to the tenants'
ledgers. Used for the ``incident`` events of :mod:`services.incidents` (open, update, notify) and
the ``notice`` events of :mod:`services.notices` (enqueued, delivered, delivery_failed). Each append
is its own transaction that first claims the outbox row (:meth:`governance.lineage.Ledger.append`
with ``claim``), so:

- a failure after the commit (a crash, the database gone, tenant 2 of 3 refused) leaves the rest
  owed, and the next :func:`append_owed` — ``crmhub incident repair``, any later incident command,
  the next delivery of that notice, the notice dispatch pass, the ``crmhub-incident-watch``
  schedule — appends exactly what is missing;
- an event is never appended twice: its row is keyed by kind, incident or notice id, step and
  tenant, and claimed in the transaction that appends it (two repairs at once: the second finds the
  row taken).

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
from schemas.lineage import EventKind, LineageEvent
from store import ledger_outbox as outbox

__all__ = ["Appended", "append_owed", "owe", "owed"]


@dataclass(frozen=True, slots=True)
class Appended:
    """What :func:`append_owed` appended (``(incident or notice id, tenant, step)``) and what was
    still owed."""

    appended: tuple[tuple[str, str, str], ...]
    remaining: int


def owe(conn: Connection, ref: str, step: str, events: Sequence[LineageEvent], *, now: datetime) -> None:
    """Record, in the caller's transaction, that each of ``events`` (events about ``ref``, an incident
    or notice id, at most one per tenant) is owed to its tenant's ledger under ``step``; an event
    already owed under that key is left as it is."""
    for event in events:
        kind = event.kind.value
        outbox.add_owed(
            conn,
            outbox.OutboxRow(
                outbox.outbox_key(kind, ref, step, event.tenant), kind, ref, event.tenant, step,
                event.canonical_bytes(), now,
            ),
        )  # fmt: skip


def owed(engine: Engine, *, kind: EventKind | None = None, ref: str | None = None) -> list[outbox.OutboxRow]:
    """The events not appended yet (of one kind, one incident or notice, or all), oldest first (at
    most 1000)."""
    with engine.connect() as conn:
        return outbox.list_owed(conn, kind=None if kind is None else kind.value, ref=ref)


def append_owed(
    engine: Engine,
    *,
    kind: EventKind | None = None,
    ref: str | None = None,
    now: datetime | None = None,
    limit: int = 1000,
) -> Appended:
    """Append every owed event (of one kind, one incident or notice, or all; at most ``limit`` per
    call), oldest first. A failure propagates after what came before it was appended; what follows
    stays owed."""
    at = now or datetime.now(UTC)
    of = None if kind is None else kind.value
    with engine.connect() as conn:
        rows = outbox.list_owed(conn, kind=of, ref=ref, limit=limit)
    ledgers: dict[str, Ledger] = {}
    done: list[tuple[str, str, str]] = []
    for row in rows:
        ledger = ledgers.setdefault(row.tenant, Ledger(engine, row.tenant))
        indexes = ledger.append(
            [LineageEvent.from_canonical(row.event)], claim=partial(outbox.claim, key=row.key, now=at)
        )
        if indexes:  # empty: another repair appended it first
            done.append((row.ref, row.tenant, row.step))
    with engine.connect() as conn:
        remaining = len(outbox.list_owed(conn, kind=of, ref=ref, limit=limit))
    return Appended(tuple(done), remaining)
