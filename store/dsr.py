"""Small store functions for data-subject requests and offboarding over the tables of
:mod:`store.syncs`, :mod:`store.staging`, :mod:`store.dead_letters` and :mod:`store.id_map` (which
stay those modules'): a tenant's syncs and staged parts, dead letters by id, and whole-tenant
deletions. Every function takes a ``Connection``; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from store._sql import chunks
from store.dead_letters import dead_letters
from store.id_map import id_map
from store.reconcile import reconcile_listing
from store.staging import staging_batches
from store.syncs import syncs

__all__ = [
    "count_tenant_rows",
    "delete_dead_letters",
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


_TENANT_TABLES = {
    "staging_parts": staging_batches,
    "dead_letters": dead_letters,
    "id_map_rows": id_map,
    "reconcile_listing_rows": reconcile_listing,  # keyed hashes of listed source ids (transient)
}


def count_tenant_rows(conn: Connection, tenant: str) -> dict[str, int]:
    """Rows the tenant has in the record-bearing stores (staging, dead letters, id map)."""
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
