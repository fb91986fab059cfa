"""Delete reconciliation state (migration ``0012_reconcile``): a sync's pending need to reconcile and
the source ids one reconciliation listed.

* ``syncs.reconcile`` / ``syncs.reconcile_requested``: a short reason code (Salesforce
  ``DELETE_LOG_PURGED`` …) set by a pull whose source could no longer prove it reported every
  delete, cleared by a reconciliation that completed; the earliest request is kept.
* table ``reconcile_listing``: (tenant, sync, reconciliation run, keyed hash of a listed source id) —
  never the id itself. :func:`vanished` compares it with the id map: the source keys mapped *before*
  the listing began that the listing lacks.

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import PrimaryKeyConstraint, String, delete, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import aware, dialect_insert, table_of
from store.associations import association_links
from store.id_map import id_map
from store.syncs import syncs

__all__ = [
    "ReconcileListingTable",
    "ReconcileNeed",
    "add_listed",
    "clear_listing",
    "clear_reconcile",
    "count_listed",
    "mapped_before",
    "reconcile_listing",
    "reconcile_need",
    "request_reconcile",
    "vanished",
]


class ReconcileListingTable(SQLModel, table=True):
    """Declaration of the ``reconcile_listing`` table (read and written through :data:`reconcile_listing`)."""

    __tablename__ = "reconcile_listing"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "sync_id", "run_id", "source_key_hash", name="pk_reconcile_listing"),
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    sync_id: str = Field(sa_type=String(128), primary_key=True)
    run_id: str = Field(sa_type=String(128), primary_key=True)
    source_key_hash: str = Field(sa_type=String(64), primary_key=True)


reconcile_listing = table_of(ReconcileListingTable)


@dataclass(frozen=True, slots=True)
class ReconcileNeed:
    """Why and since when a sync needs a reconciliation."""

    reason: str
    requested: datetime | None


def request_reconcile(conn: Connection, tenant: str, sync_id: str, reason: str, *, now: datetime) -> None:
    """Record that the sync needs a reconciliation (``reason``: a short code, no PII). A request
    already pending keeps its reason and time (the earliest gap is the one to close)."""
    stmt = (
        syncs.update()
        .where(syncs.c.tenant == tenant, syncs.c.id == sync_id, syncs.c.reconcile.is_(None))
        .values(reconcile=reason[:64], reconcile_requested=now)
    )
    conn.execute(stmt)


def reconcile_need(conn: Connection, tenant: str, sync_id: str) -> ReconcileNeed | None:
    """The sync's pending request, or None."""
    stmt = select(syncs.c.reconcile, syncs.c.reconcile_requested).where(
        syncs.c.tenant == tenant, syncs.c.id == sync_id
    )
    row = conn.execute(stmt).one_or_none()
    if row is None or row[0] is None:
        return None
    return ReconcileNeed(str(row[0]), aware(row[1]))


def clear_reconcile(conn: Connection, tenant: str, sync_id: str, *, requested_before: datetime) -> bool:
    """Clear the request once a reconciliation whose listing began at ``requested_before`` completed;
    a request made after that moment stays (its gap may postdate the listing). Returns whether one
    was cleared."""
    stmt = (
        syncs.update()
        .where(
            syncs.c.tenant == tenant,
            syncs.c.id == sync_id,
            syncs.c.reconcile.is_not(None),
            syncs.c.reconcile_requested <= requested_before,
        )
        .values(reconcile=None, reconcile_requested=None)
    )
    return bool(conn.execute(stmt).rowcount)


def add_listed(conn: Connection, tenant: str, sync_id: str, run_id: str, hashes: Sequence[str]) -> None:
    """Record listed source keys (keyed hashes); a key listed twice (a retried page) is kept once."""
    if not hashes:
        return
    rows = [
        {"tenant": tenant, "sync_id": sync_id, "run_id": run_id, "source_key_hash": h}
        for h in dict.fromkeys(hashes)
    ]
    conn.execute(dialect_insert(conn, reconcile_listing).on_conflict_do_nothing(), rows)


def count_listed(conn: Connection, tenant: str, sync_id: str, run_id: str) -> int:
    """Distinct source keys the reconciliation ``run_id`` listed so far."""
    stmt = select(func.count()).where(
        reconcile_listing.c.tenant == tenant,
        reconcile_listing.c.sync_id == sync_id,
        reconcile_listing.c.run_id == run_id,
    )
    return int(conn.execute(stmt).scalar_one())


def clear_listing(conn: Connection, tenant: str, sync_id: str, *, keep_run: str | None = None) -> int:
    """Forget the sync's listings (those of ``keep_run`` excepted); returns the rows deleted."""
    stmt = delete(reconcile_listing).where(
        reconcile_listing.c.tenant == tenant, reconcile_listing.c.sync_id == sync_id
    )
    if keep_run is not None:
        stmt = stmt.where(reconcile_listing.c.run_id != keep_run)
    return int(conn.execute(stmt).rowcount)


def _mapped(links_field: str | None) -> tuple[Any, Any, Any, list[Any]]:
    """(key, destination id, updated) columns and the extra filter of what a sync maps: its id map,
    or — a junction sync's rows (``links_field``) — its ``association_links`` rows of that field."""
    if links_field is None:
        return id_map.c.source_key_hash, id_map.c.destination_id, id_map.c.updated, [id_map.c.sync_id]
    t = association_links.c
    return t.child_key_hash, t.child_id, t.updated, [t.sync_id, t.field == links_field]


def mapped_before(
    conn: Connection, tenant: str, sync_id: str, when: datetime, *, links_field: str | None = None
) -> int:
    """Id-map entries (or a junction's rows, ``links_field``) of the sync last written before ``when``
    (what a listing begun then can judge)."""
    key, _, updated, (sync_col, *more) = _mapped(links_field)
    table = key.table
    stmt = (
        select(func.count())
        .select_from(table)
        .where(table.c.tenant == tenant, sync_col == sync_id, updated < when, *more)
    )
    return int(conn.execute(stmt).scalar_one())


def vanished(
    conn: Connection,
    tenant: str,
    sync_id: str,
    run_id: str,
    *,
    mapped_before: datetime,
    links_field: str | None = None,
) -> list[tuple[str, str]]:
    """(source key hash, destination id) of the id-map entries (or junction rows) written before
    ``mapped_before`` whose key the listing ``run_id`` lacks, ordered by key hash: the records gone
    from the source."""
    key, destination, updated, (sync_col, *more) = _mapped(links_field)
    table = key.table
    listed = select(reconcile_listing.c.source_key_hash).where(
        reconcile_listing.c.tenant == tenant,
        reconcile_listing.c.sync_id == sync_id,
        reconcile_listing.c.run_id == run_id,
        reconcile_listing.c.source_key_hash == key,
    )
    stmt = (
        select(key, destination)
        .where(
            table.c.tenant == tenant, sync_col == sync_id, updated < mapped_before, ~listed.exists(), *more
        )
        .order_by(key)
    )
    return [(str(r[0]), str(r[1])) for r in conn.execute(stmt)]
