"""Staging: sealed batches between the pull that wrote them and the push that reads them (table
``staging_batches``, migration ``0006_syncs``).

A staged batch is keyed by its batch id and split into parts; a part holds the vault ciphertext of
its records (and of the keys of records deleted at the source), never plaintext, with counts for
progress. ``expires_at`` is created + the instruction's retention: :func:`purge_expired_staging`
deletes what no push consumed in time. Every function takes a SQLAlchemy ``Connection`` and leaves
the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, LargeBinary, PrimaryKeyConstraint, String, delete, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import as_bytes, required_aware, table_of

__all__ = [
    "StagedPart",
    "StagingBatchTable",
    "delete_staged",
    "delete_staged_for_run",
    "get_staged",
    "purge_expired_staging",
    "put_staged",
    "staged_parts",
    "staging_batches",
]


class StagingBatchTable(SQLModel, table=True):
    """Declaration of the ``staging_batches`` table (read and written through :data:`staging_batches`)."""

    __tablename__ = "staging_batches"
    __table_args__ = (
        PrimaryKeyConstraint("batch_id", "part", name="pk_staging_batches"),
        Index("ix_staging_batches_expires", "expires_at"),
        Index("ix_staging_batches_run", "tenant", "sync_id", "run_id"),
    )

    batch_id: str = Field(sa_type=String(200), primary_key=True)
    part: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    tenant: str = Field(sa_type=String(128))
    sync_id: str = Field(sa_type=String(128))
    run_id: str = Field(sa_type=String(128))
    seq: int = Field(sa_type=Integer)
    sealed: bytes = Field(sa_type=LargeBinary)
    records: int = Field(sa_type=Integer)
    deleted: int = Field(sa_type=Integer)
    deleted_keys: bytes | None = Field(sa_type=LargeBinary)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


staging_batches = table_of(StagingBatchTable)


@dataclass(frozen=True, slots=True)
class StagedPart:
    """One sealed part of a staged batch: records (and deleted keys) between pull and push."""

    batch_id: str
    part: int
    tenant: str
    sync_id: str
    run_id: str
    seq: int
    sealed: bytes
    records: int
    deleted: int
    deleted_keys: bytes | None
    created: datetime
    expires_at: datetime


def put_staged(conn: Connection, part: StagedPart) -> None:
    """Insert one staged part (replacing a leftover of a failed attempt with the same id)."""
    conn.execute(
        delete(staging_batches).where(
            staging_batches.c.batch_id == part.batch_id, staging_batches.c.part == part.part
        )
    )
    conn.execute(staging_batches.insert().values(**asdict(part)))


def _staged(m: Any) -> StagedPart:
    sealed = as_bytes(m["sealed"])
    assert sealed is not None
    return StagedPart(
        m["batch_id"],
        m["part"],
        m["tenant"],
        m["sync_id"],
        m["run_id"],
        m["seq"],
        sealed,
        m["records"],
        m["deleted"],
        as_bytes(m["deleted_keys"]),
        required_aware(m["created"]),
        required_aware(m["expires_at"]),
    )


def get_staged(conn: Connection, tenant: str, batch_id: str, *, part: int | None = None) -> list[StagedPart]:
    """The parts of a staged batch of ``tenant`` in part order (one part if ``part`` is given)."""
    stmt = select(staging_batches).where(
        staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id
    )
    if part is not None:
        stmt = stmt.where(staging_batches.c.part == part)
    return [_staged(m) for m in conn.execute(stmt.order_by(staging_batches.c.part)).mappings()]


def staged_parts(conn: Connection, tenant: str, batch_id: str) -> list[int]:
    """Part numbers of a staged batch (no blobs read)."""
    stmt = (
        select(staging_batches.c.part)
        .where(staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id)
        .order_by(staging_batches.c.part)
    )
    return [int(p) for p in conn.execute(stmt).scalars()]


def delete_staged(conn: Connection, tenant: str, batch_id: str, *, keep: Iterable[int] | None = None) -> int:
    """Delete a staged batch of ``tenant`` (all parts, or all but ``keep``); returns parts deleted."""
    stmt = delete(staging_batches).where(
        staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id
    )
    kept = list(keep) if keep is not None else []
    if kept:
        stmt = stmt.where(staging_batches.c.part.not_in(kept))
    return int(conn.execute(stmt).rowcount)


def delete_staged_for_run(conn: Connection, tenant: str, sync_id: str, run_id: str) -> int:
    """Delete every staged part of one run (cancellation cleanup); returns how many."""
    stmt = delete(staging_batches).where(
        staging_batches.c.tenant == tenant,
        staging_batches.c.sync_id == sync_id,
        staging_batches.c.run_id == run_id,
    )
    return int(conn.execute(stmt).rowcount)


def purge_expired_staging(conn: Connection, *, now: datetime, tenant: str | None = None) -> int:
    """Delete staged parts whose retention ended (``expires_at <= now``), of every tenant or of
    ``tenant`` only; returns how many."""
    stmt = delete(staging_batches).where(staging_batches.c.expires_at <= now)
    if tenant is not None:
        stmt = stmt.where(staging_batches.c.tenant == tenant)
    return int(conn.execute(stmt).rowcount)
