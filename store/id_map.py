"""The id map: which destination record a source record became (table ``id_map``, migration
``0006_syncs``).

One row per (tenant, sync, keyed hash of the source record's key) → the destination's record id, so
a delete at the source can be propagated to the destination. The source key is never stored, only
its keyed hash (``kh_…``). Every function takes a SQLAlchemy ``Connection`` and leaves the
transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, Index, PrimaryKeyConstraint, String, delete, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import chunks, dialect_insert, table_of

__all__ = [
    "IdMapTable",
    "delete_id_map",
    "id_map",
    "lookup_id_map",
    "purge_id_map",
    "shared_destinations",
    "upsert_id_map",
]


class IdMapTable(SQLModel, table=True):
    """Declaration of the ``id_map`` table (read and written through :data:`id_map`)."""

    __tablename__ = "id_map"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "sync_id", "source_key_hash", name="pk_id_map"),
        Index("ix_id_map_destination", "tenant", "sync_id", "destination_id"),  # 0012_reconcile
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    sync_id: str = Field(sa_type=String(128), primary_key=True)
    source_key_hash: str = Field(sa_type=String(64), primary_key=True)
    destination_id: str = Field(sa_type=String(255))
    updated: datetime = Field(sa_type=DateTime(timezone=True))


id_map = table_of(IdMapTable)


def upsert_id_map(
    conn: Connection, tenant: str, sync_id: str, pairs: Sequence[tuple[str, str]], *, now: datetime
) -> None:
    """Record source key hash → destination id (insert or replace) for many records at once."""
    if not pairs:
        return
    rows = [
        {"tenant": tenant, "sync_id": sync_id, "source_key_hash": h, "destination_id": d, "updated": now}
        for h, d in dict(pairs).items()  # last mapping of a key wins within one call
    ]
    insert = dialect_insert(conn, id_map)
    stmt = insert.on_conflict_do_update(
        index_elements=["tenant", "sync_id", "source_key_hash"],
        set_={"destination_id": insert.excluded.destination_id, "updated": insert.excluded.updated},
    )
    conn.execute(stmt, rows)


def lookup_id_map(conn: Connection, tenant: str, sync_id: str, hashes: Sequence[str]) -> dict[str, str]:
    """Destination ids of the given source key hashes (hashes never mapped are absent)."""
    out: dict[str, str] = {}
    for chunk in chunks(list(dict.fromkeys(hashes))):
        stmt = select(id_map.c.source_key_hash, id_map.c.destination_id).where(
            id_map.c.tenant == tenant, id_map.c.sync_id == sync_id, id_map.c.source_key_hash.in_(chunk)
        )
        out.update({str(r[0]): str(r[1]) for r in conn.execute(stmt)})
    return out


def shared_destinations(
    conn: Connection, tenant: str, sync_id: str, destination_ids: Sequence[str], *, besides: Sequence[str]
) -> set[str]:
    """Those of ``destination_ids`` still mapped from a source key hash not in ``besides``: records
    another live source record landed in (a merge winner upserted by the loser's external id), which
    deleting the ``besides`` keys must not delete (index ``ix_id_map_destination``)."""
    leaving = set(besides)
    out: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(destination_ids))):
        stmt = select(id_map.c.destination_id, id_map.c.source_key_hash).where(
            id_map.c.tenant == tenant, id_map.c.sync_id == sync_id, id_map.c.destination_id.in_(chunk)
        )
        out.update(str(r[0]) for r in conn.execute(stmt) if str(r[1]) not in leaving)
    return out


def delete_id_map(conn: Connection, tenant: str, sync_id: str, hashes: Sequence[str]) -> int:
    """Forget mappings (after their destination records were deleted); returns how many."""
    n = 0
    for chunk in chunks(list(hashes)):
        stmt = delete(id_map).where(
            id_map.c.tenant == tenant, id_map.c.sync_id == sync_id, id_map.c.source_key_hash.in_(chunk)
        )
        n += int(conn.execute(stmt).rowcount)
    return n


def purge_id_map(conn: Connection, tenant: str, *, before: datetime) -> int:
    """Forget the tenant's mappings last written before ``before`` (their retention ended); a later
    source delete of such a record is then counted as not at the destination. Returns how many."""
    stmt = delete(id_map).where(id_map.c.tenant == tenant, id_map.c.updated < before)
    return int(conn.execute(stmt).rowcount)
