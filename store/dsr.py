"""Small store functions for data-subject requests and offboarding over the tables of
:mod:`store.syncs`, :mod:`store.staging`, :mod:`store.dead_letters` and :mod:`store.id_map` (which
stay those modules'): a tenant's syncs and staged parts, dead letters by id, and whole-tenant
deletions, and a subject's relationship state (:mod:`store.associations`). Every function takes a
``Connection``; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from store._sql import chunks
from store.associations import association_deferrals, association_links
from store.dead_letters import dead_letters
from store.id_map import id_map
from store.reconcile import reconcile_listing
from store.staging import staging_batches
from store.syncs import syncs

__all__ = [
    "count_tenant_rows",
    "delete_dead_letters",
    "delete_subject_links",
    "delete_tenant_rows",
    "sync_ids",
    "tenant_staged_parts",
]


def sync_ids(conn: Connection, tenant: str) -> list[str]:
    """Ids of the tenant's syncs, sorted."""
    stmt = select(syncs.c.id).where(syncs.c.tenant == tenant).order_by(syncs.c.id)
    return [str(s) for s in conn.execute(stmt).scalars()]


def tenant_staged_parts(conn: Connection, tenant: str, sync_id: str) -> list[tuple[str, int]]:
    """``(batch_id, part)`` of every staged part of one sync (no blobs read)."""
    t = staging_batches
    stmt = (
        select(t.c.batch_id, t.c.part)
        .where(t.c.tenant == tenant, t.c.sync_id == sync_id)
        .order_by(t.c.batch_id, t.c.part)
    )
    return [(str(b), int(p)) for b, p in conn.execute(stmt)]


def delete_dead_letters(conn: Connection, tenant: str, ids: Sequence[str]) -> int:
    """Delete the tenant's dead letters with these ids; returns how many."""
    t = dead_letters
    return sum(
        int(conn.execute(delete(t).where(t.c.tenant == tenant, t.c.id.in_(chunk))).rowcount)
        for chunk in chunks(ids)
    )


def delete_subject_links(
    conn: Connection, tenant: str, sync_id: str, hashes: Sequence[str]
) -> dict[str, int]:
    """Delete a subject's relationship state in one sync, whose records' keys (keyed hashes) are
    ``hashes``: every ``association_links`` and ``association_deferrals`` row of the sync keyed by
    one of them (links, sealed source snapshots, sealed waiting ids, sealed roles …), and every row
    of any sync *waiting for* one of them as its parent (a junction row or child of the subject: its
    queue entries and all its links rows in its own sync). Returns counts per table."""
    d = association_deferrals.c
    rows: set[tuple[str, str]] = {(sync_id, h) for h in hashes}
    for chunk in chunks(list(dict.fromkeys(hashes))):
        stmt = select(d.sync_id, d.child_key_hash).where(
            d.tenant == tenant, d.parent_sync_id == sync_id, d.parent_key_hash.in_(chunk)
        )
        rows |= {(str(s), str(h)) for s, h in conn.execute(stmt)}
    by_sync: dict[str, list[str]] = {}
    for s, h in sorted(rows):
        by_sync.setdefault(s, []).append(h)
    counts = {"association_links": 0, "association_deferrals": 0}
    for name, table in (
        ("association_links", association_links),
        ("association_deferrals", association_deferrals),
    ):
        t = table.c
        for s, keys in by_sync.items():
            for chunk in chunks(keys):
                gone = delete(table).where(t.tenant == tenant, t.sync_id == s, t.child_key_hash.in_(chunk))
                counts[name] += int(conn.execute(gone).rowcount)
    return counts


_TENANT_TABLES = {
    "staging_parts": staging_batches,
    "dead_letters": dead_letters,
    "id_map_rows": id_map,
    "reconcile_listing_rows": reconcile_listing,  # keyed hashes of listed source ids (transient)
    "association_link_rows": association_links,  # links, snapshots, sealed waiting ids and roles
    "association_deferral_rows": association_deferrals,  # children waiting for a parent
}


def count_tenant_rows(conn: Connection, tenant: str) -> dict[str, int]:
    """Rows the tenant has in the record-bearing stores (staging, dead letters, id map, relationships)."""
    return {
        name: int(conn.execute(select(func.count()).select_from(t).where(t.c.tenant == tenant)).scalar_one())
        for name, t in _TENANT_TABLES.items()
    }


def delete_tenant_rows(conn: Connection, tenant: str) -> dict[str, int]:
    """Delete every row of the tenant in the record-bearing stores; returns counts per store."""
    return {
        name: int(conn.execute(delete(t).where(t.c.tenant == tenant)).rowcount)
        for name, t in _TENANT_TABLES.items()
    }
