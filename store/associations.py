"""Relationships a sync carries (issue 14): the links it wrote and the children waiting for their
parent (tables ``association_links`` and ``association_deferrals``, migration ``0013_associations``).

``association_links``: per (tenant, sync, relationship field, keyed hash of the child's source key)
the destination ids of the child and of the parent it is linked to — so a re-parented child's old
link is removed, and an unchanged one costs no call. ``association_deferrals``: children whose
parent has no destination record yet (the parent sync has not pushed it): the parent sync and the
keyed hash of the parent's source key, how often the child was deferred and since when. Only keyed
hashes and destination record ids are stored, never a source value. Every function takes a
SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, PrimaryKeyConstraint, String, Table, delete, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.sync import JUNCTION_SEPARATOR, is_junction
from store._sql import chunks, dialect_insert, required_aware, table_of
from store.syncs import syncs

__all__ = [
    "JUNCTION_SEPARATOR",
    "LABEL_MARK",
    "AssociationDeferralTable",
    "AssociationLinkTable",
    "Deferred",
    "association_deferrals",
    "association_links",
    "count_deferred",
    "defer",
    "drop_deferred",
    "drop_links",
    "is_junction",
    "is_relationship",
    "links_of",
    "links_to",
    "set_links",
    "stalest_links",
    "syncs_reading",
    "syncs_writing",
    "waiting_on",
]


RELATIONSHIP_MARK = "@"
LABEL_MARK = "@label"
"""The mapping destination labelling a junction row's pair (:mod:`workflows.junction_labels`): no
parent stream, though it reads as a relationship."""


def is_relationship(destination: str) -> bool:
    """Is a mapping destination a relationship (``@<parent stream>``, see
    :mod:`workflows.associations`) rather than a destination field?"""
    return destination.startswith(RELATIONSHIP_MARK) and len(destination) > 1


class AssociationLinkTable(SQLModel, table=True):
    """Declaration of the ``association_links`` table."""

    __tablename__ = "association_links"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "sync_id", "field", "child_key_hash", name="pk_association_links"),
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    sync_id: str = Field(sa_type=String(128), primary_key=True)
    field: str = Field(sa_type=String(128), primary_key=True)
    child_key_hash: str = Field(sa_type=String(64), primary_key=True)
    child_id: str = Field(sa_type=String(255))
    parent_id: str = Field(sa_type=String(255))
    updated: datetime = Field(sa_type=DateTime(timezone=True))


class AssociationDeferralTable(SQLModel, table=True):
    """Declaration of the ``association_deferrals`` table."""

    __tablename__ = "association_deferrals"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "sync_id", "field", "child_key_hash", name="pk_association_deferrals"),
        Index("ix_association_deferrals_parent", "tenant", "parent_sync_id", "parent_key_hash"),
    )

    tenant: str = Field(sa_type=String(128), primary_key=True)
    sync_id: str = Field(sa_type=String(128), primary_key=True)
    field: str = Field(sa_type=String(128), primary_key=True)
    child_key_hash: str = Field(sa_type=String(64), primary_key=True)
    child_id: str = Field(sa_type=String(255))
    child_stream: str = Field(sa_type=String(128))
    parent_stream: str = Field(sa_type=String(128))
    parent_sync_id: str = Field(sa_type=String(128))
    parent_key_hash: str = Field(sa_type=String(64))
    attempts: int = Field(sa_type=Integer)
    first_deferred: datetime = Field(sa_type=DateTime(timezone=True))
    updated: datetime = Field(sa_type=DateTime(timezone=True))


association_links = table_of(AssociationLinkTable)
association_deferrals = table_of(AssociationDeferralTable)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A child waiting for its parent's destination record."""

    sync_id: str
    field: str
    child_key_hash: str
    child_id: str
    child_stream: str
    parent_stream: str
    parent_sync_id: str
    parent_key_hash: str
    attempts: int
    first_deferred: datetime


def syncs_writing(conn: Connection, tenant: str, connection_id: str, stream: str) -> list[str]:
    """Ids of the tenant's syncs that write ``stream`` through destination connection ``connection_id``."""
    stmt = select(syncs.c.id).where(
        syncs.c.tenant == tenant,
        syncs.c.destination_connection_id == connection_id,
        syncs.c.destination_stream == stream,
    )
    return sorted(str(r[0]) for r in conn.execute(stmt))


def syncs_reading(
    conn: Connection, tenant: str, source_connection_id: str, stream: str, destination_connection_id: str
) -> list[tuple[str, str]]:
    """(id, destination stream) of the tenant's syncs that read ``stream`` through source connection
    ``source_connection_id`` into destination connection ``destination_connection_id``."""
    stmt = select(syncs.c.id, syncs.c.destination_stream).where(
        syncs.c.tenant == tenant,
        syncs.c.source_connection_id == source_connection_id,
        syncs.c.source_stream == stream,
        syncs.c.destination_connection_id == destination_connection_id,
    )
    return sorted((str(r[0]), str(r[1])) for r in conn.execute(stmt))


def stalest_links(
    conn: Connection, tenant: str, sync_id: str, field: str, limit: int
) -> list[tuple[str, str, str]]:
    """The ``limit`` (child key hash, child id, parent id) rows of a field updated longest ago."""
    t = association_links.c
    stmt = (
        select(t.child_key_hash, t.child_id, t.parent_id)
        .where(t.tenant == tenant, t.sync_id == sync_id, t.field == field)
        .order_by(t.updated, t.child_key_hash)
        .limit(limit)
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(stmt)]


def links_of(
    conn: Connection, tenant: str, sync_id: str, field: str, child_hashes: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """child key hash → (child destination id, parent destination id) of the links written."""
    t = association_links.c
    out: dict[str, tuple[str, str]] = {}
    for chunk in chunks(list(dict.fromkeys(child_hashes))):
        stmt = select(t.child_key_hash, t.child_id, t.parent_id).where(
            t.tenant == tenant, t.sync_id == sync_id, t.field == field, t.child_key_hash.in_(chunk)
        )
        out.update({str(r[0]): (str(r[1]), str(r[2])) for r in conn.execute(stmt)})
    return out


def links_to(
    conn: Connection, tenant: str, sync_id: str, field: str, child_ids: Sequence[str]
) -> list[tuple[str, str, str]]:
    """(child key hash, child id, parent id) of the links written from these destination child ids."""
    t = association_links.c
    out: list[tuple[str, str, str]] = []
    for chunk in chunks(list(dict.fromkeys(child_ids))):
        stmt = select(t.child_key_hash, t.child_id, t.parent_id).where(
            t.tenant == tenant, t.sync_id == sync_id, t.field == field, t.child_id.in_(chunk)
        )
        out += [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(stmt)]
    return out


def set_links(
    conn: Connection,
    tenant: str,
    sync_id: str,
    field: str,
    rows: Sequence[tuple[str, str, str]],
    *,
    now: datetime,
) -> None:
    """Record (child key hash, child id, parent id) links (insert or replace)."""
    if not rows:
        return
    values = [
        {"tenant": tenant, "sync_id": sync_id, "field": field, "child_key_hash": h, "child_id": c,
         "parent_id": p, "updated": now}
        for h, (c, p) in {h: (c, p) for h, c, p in rows}.items()
    ]  # fmt: skip
    insert = dialect_insert(conn, association_links)
    stmt = insert.on_conflict_do_update(
        index_elements=["tenant", "sync_id", "field", "child_key_hash"],
        set_={
            "child_id": insert.excluded.child_id,
            "parent_id": insert.excluded.parent_id,
            "updated": insert.excluded.updated,
        },
    )
    conn.execute(stmt, values)


def _drop(
    conn: Connection, table: Table, tenant: str, sync_id: str, field: str, hashes: Sequence[str]
) -> int:
    t = table.c
    n = 0
    for chunk in chunks(list(hashes)):
        stmt = delete(table).where(
            t.tenant == tenant, t.sync_id == sync_id, t.field == field, t.child_key_hash.in_(chunk)
        )
        n += int(conn.execute(stmt).rowcount)
    return n


def drop_links(conn: Connection, tenant: str, sync_id: str, field: str, child_hashes: Sequence[str]) -> int:
    """Forget links (unlinked at the destination); returns how many."""
    return _drop(conn, association_links, tenant, sync_id, field, child_hashes)


def count_deferred(conn: Connection, tenant: str, sync_id: str, excluding: Sequence[str] = ()) -> int:
    """How many children of the sync wait for their parent (those keyed ``excluding`` not counted:
    they are being settled again)."""
    t = association_deferrals.c
    stmt = (
        select(func.count())
        .select_from(association_deferrals)
        .where(t.tenant == tenant, t.sync_id == sync_id)
    )
    n = int(conn.execute(stmt).scalar_one())
    for chunk in chunks(list(dict.fromkeys(excluding))):
        n -= int(conn.execute(stmt.where(t.child_key_hash.in_(chunk))).scalar_one())
    return n


def defer(conn: Connection, tenant: str, rows: Sequence[Deferred], *, now: datetime) -> None:
    """Queue children for their parent (insert, or count one more attempt and point at the new parent)."""
    if not rows:
        return
    values = [
        {"tenant": tenant, "sync_id": d.sync_id, "field": d.field, "child_key_hash": d.child_key_hash,
         "child_id": d.child_id, "child_stream": d.child_stream, "parent_stream": d.parent_stream,
         "parent_sync_id": d.parent_sync_id, "parent_key_hash": d.parent_key_hash, "attempts": 1,
         "first_deferred": now, "updated": now}
        for d in {(d.sync_id, d.field, d.child_key_hash): d for d in rows}.values()
    ]  # fmt: skip
    insert = dialect_insert(conn, association_deferrals)
    stmt = insert.on_conflict_do_update(
        index_elements=["tenant", "sync_id", "field", "child_key_hash"],
        set_={
            "child_id": insert.excluded.child_id,
            "parent_sync_id": insert.excluded.parent_sync_id,
            "parent_key_hash": insert.excluded.parent_key_hash,
            "attempts": association_deferrals.c.attempts + 1,
            "updated": insert.excluded.updated,
        },
    )
    conn.execute(stmt, values)


def drop_deferred(
    conn: Connection, tenant: str, sync_id: str, field: str, child_hashes: Sequence[str]
) -> int:
    """Take children off the queue (linked, unlinked or dead-lettered); returns how many."""
    return _drop(conn, association_deferrals, tenant, sync_id, field, child_hashes)


def waiting_on(
    conn: Connection, tenant: str, parent_sync_id: str, parent_hashes: Sequence[str]
) -> list[Deferred]:
    """The children (of any sync) waiting for one of these parents of ``parent_sync_id``."""
    t = association_deferrals.c
    out: list[Deferred] = []
    for chunk in chunks(list(dict.fromkeys(parent_hashes))):
        stmt = select(association_deferrals).where(
            t.tenant == tenant, t.parent_sync_id == parent_sync_id, t.parent_key_hash.in_(chunk)
        )
        for r in conn.execute(stmt).mappings():
            out.append(
                Deferred(
                    sync_id=r["sync_id"],
                    field=r["field"],
                    child_key_hash=r["child_key_hash"],
                    child_id=r["child_id"],
                    child_stream=r["child_stream"],
                    parent_stream=r["parent_stream"],
                    parent_sync_id=r["parent_sync_id"],
                    parent_key_hash=r["parent_key_hash"],
                    attempts=int(r["attempts"]),
                    first_deferred=required_aware(r["first_deferred"]),
                )
            )
    return out
