"""Small store functions for data-subject requests and offboarding over the tables of
:mod:`store.syncs` (which stay that module's): a tenant's syncs and staged parts, dead letters by
id, and whole-tenant deletions. Every function takes a ``Connection``; the caller owns the
transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from store import syncs as store

__all__ = [
    "count_tenant_rows",
    "delete_dead_letters",
    "delete_tenant_rows",
    "sync_ids",
    "tenant_staged_parts",
]


def sync_ids(conn: Connection, tenant: str) -> list[str]:
    """Ids of the tenant's syncs, sorted."""
    stmt = select(store.syncs.c.id).where(store.syncs.c.tenant == tenant).order_by(store.syncs.c.id)
    return [str(s) for s in conn.execute(stmt).scalars()]


def tenant_staged_parts(conn: Connection, tenant: str, sync_id: str) -> list[tuple[str, int]]:
    """``(batch_id, part)`` of every staged part of one sync (no blobs read)."""
    t = store.staging_batches
    stmt = (
        select(t.c.batch_id, t.c.part)
        .where(t.c.tenant == tenant, t.c.sync_id == sync_id)
        .order_by(t.c.batch_id, t.c.part)
    )
    return [(str(b), int(p)) for b, p in conn.execute(stmt)]


def delete_dead_letters(conn: Connection, tenant: str, ids: Sequence[str]) -> int:
    """Delete the tenant's dead letters with these ids; returns how many."""
    n = 0
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        t = store.dead_letters
        n += int(conn.execute(delete(t).where(t.c.tenant == tenant, t.c.id.in_(chunk))).rowcount)
    return n


_TENANT_TABLES = {
    "staging_parts": store.staging_batches,
    "dead_letters": store.dead_letters,
    "id_map_rows": store.id_map,
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
