"""Wrapped tenant keys: the table behind the vault, and the small functions that touch it.

One row per (tenant, kind, version). ``kind`` is ``data`` (AES-256-GCM data keys, rotated) or
``pseudonym`` (the HMAC key of :mod:`governance.pseudonym`, one version, never rotated so that
pseudonyms stay stable). A row holds the key *wrapped* by a key-encryption key (KEK) named by
``kek_id``; plaintext keys never reach the database.

``uses_reserved`` is the durable use counter: a process reserves a block of nonce uses with one
``UPDATE`` and then seals that many times from memory, so the database bounds (from above) how many
nonces a key has ever produced, even across crashes.

Status moves one way: ``active`` (new writes) → ``retired`` (opens only) → ``destroyed`` (wrapped
key erased: crypto-shredded). The table (``vault_tenant_keys``) is created by migration ``0003_vault``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlmodel import Field, SQLModel

from store._sql import table_of

__all__ = [
    "KeyKind",
    "KeyStatus",
    "TenantKeyRow",
    "TenantKeyTable",
    "active_key",
    "destroy_tenant_keys",
    "get_key",
    "insert_key",
    "latest_version",
    "list_keys",
    "live_kek_ids",
    "reserve_uses",
    "retire_active",
    "shredded_at",
    "tenant_keys",
    "update_wrapping",
]


class TenantKeyTable(SQLModel, table=True):
    """Declaration of the ``vault_tenant_keys`` table (read and written through :data:`tenant_keys`)."""

    __tablename__ = "vault_tenant_keys"
    __table_args__ = (
        PrimaryKeyConstraint("tenant", "kind", "version", name="pk_vault_tenant_keys"),
        Index("ix_vault_tenant_keys_status", "tenant", "kind", "status"),
    )

    tenant: str = Field(sa_type=String(255), primary_key=True)
    kind: str = Field(sa_type=String(16), primary_key=True)
    version: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    wrapped_key: bytes | None = Field(sa_type=LargeBinary)  # NULL once destroyed
    kek_id: str = Field(sa_type=String(255))
    status: str = Field(sa_type=String(16))
    uses_reserved: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    retired_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    destroyed_at: datetime | None = Field(sa_type=DateTime(timezone=True))


tenant_keys = table_of(TenantKeyTable)


class KeyKind(StrEnum):
    """What a tenant key is for."""

    DATA = "data"
    PSEUDONYM = "pseudonym"


class KeyStatus(StrEnum):
    """Lifecycle of a tenant key; it only moves forward."""

    ACTIVE = "active"
    RETIRED = "retired"
    DESTROYED = "destroyed"


TenantKeyRow = Row[
    tuple[str, str, int, bytes | None, str, str, int, datetime, datetime | None, datetime | None]
]


def _now() -> datetime:
    return datetime.now(UTC)


def insert_key(
    conn: Connection, *, tenant: str, kind: KeyKind, version: int, wrapped_key: bytes, kek_id: str
) -> None:
    """Insert a new active key version; a concurrent insert of the same version raises
    ``sqlalchemy.exc.IntegrityError`` (the caller reloads instead)."""
    conn.execute(
        tenant_keys.insert().values(
            tenant=tenant,
            kind=kind.value,
            version=version,
            wrapped_key=wrapped_key,
            kek_id=kek_id,
            status=KeyStatus.ACTIVE.value,
            uses_reserved=0,
            created_at=_now(),
        )
    )


def get_key(conn: Connection, tenant: str, kind: KeyKind, version: int) -> TenantKeyRow | None:
    """The row of one key version, or ``None``."""
    row = conn.execute(
        select(tenant_keys).where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == kind.value,
            tenant_keys.c.version == version,
        )
    ).one_or_none()
    return row


def active_key(conn: Connection, tenant: str, kind: KeyKind) -> TenantKeyRow | None:
    """The newest active version of a tenant's key of ``kind``, or ``None``."""
    row = conn.execute(
        select(tenant_keys)
        .where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == kind.value,
            tenant_keys.c.status == KeyStatus.ACTIVE.value,
        )
        .order_by(tenant_keys.c.version.desc())
        .limit(1)
    ).one_or_none()
    return row


def latest_version(conn: Connection, tenant: str, kind: KeyKind) -> int:
    """Highest version ever created for (tenant, kind), whatever its status; 0 if none."""
    value = conn.execute(
        select(func.max(tenant_keys.c.version)).where(
            tenant_keys.c.tenant == tenant, tenant_keys.c.kind == kind.value
        )
    ).scalar_one()
    return int(value or 0)


def list_keys(conn: Connection, tenant: str | None = None) -> Sequence[TenantKeyRow]:
    """All key rows (of one tenant, or of every tenant), oldest first."""
    stmt = select(tenant_keys).order_by(tenant_keys.c.tenant, tenant_keys.c.kind, tenant_keys.c.version)
    if tenant is not None:
        stmt = stmt.where(tenant_keys.c.tenant == tenant)
    return conn.execute(stmt).all()


def shredded_at(conn: Connection, tenant: str) -> datetime | None:
    """When ``tenant``'s keys were destroyed (crypto-shredded), or ``None`` if they were not.

    One indexed lookup (``ix_vault_tenant_keys_status`` starts with the tenant): running vaults ask it
    every ``shred_check_s`` to drop keys they cached before a shred in another process."""
    row = conn.execute(
        select(tenant_keys.c.destroyed_at)
        .where(tenant_keys.c.tenant == tenant, tenant_keys.c.status == KeyStatus.DESTROYED.value)
        .limit(1)
    ).first()
    if row is None:
        return None
    at: datetime | None = row.destroyed_at
    return at or datetime.min.replace(tzinfo=UTC)


def live_kek_ids(conn: Connection) -> dict[str, int]:
    """KEK id → number of keys (not destroyed) wrapped by it, over every tenant."""
    rows = conn.execute(
        select(tenant_keys.c.kek_id, func.count())
        .where(tenant_keys.c.status != KeyStatus.DESTROYED.value)
        .group_by(tenant_keys.c.kek_id)
    ).all()
    return {str(kek_id): int(n) for kek_id, n in rows}


def retire_active(conn: Connection, tenant: str, kind: KeyKind, *, below_version: int) -> None:
    """Mark active versions older than ``below_version`` retired (they still open data)."""
    conn.execute(
        update(tenant_keys)
        .where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == kind.value,
            tenant_keys.c.status == KeyStatus.ACTIVE.value,
            tenant_keys.c.version < below_version,
        )
        .values(status=KeyStatus.RETIRED.value, retired_at=_now())
    )


def reserve_uses(conn: Connection, tenant: str, version: int, block: int) -> int | None:
    """Reserve ``block`` more uses of an active data key; returns the new reserved total.

    Returns ``None`` when the version is no longer active (rotated or destroyed elsewhere). The
    increment happens in the database (``uses_reserved = uses_reserved + block``), so concurrent
    processes never get overlapping blocks.
    """
    result = conn.execute(
        update(tenant_keys)
        .where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == KeyKind.DATA.value,
            tenant_keys.c.version == version,
            tenant_keys.c.status == KeyStatus.ACTIVE.value,
        )
        .values(uses_reserved=tenant_keys.c.uses_reserved + block)
    )
    if result.rowcount != 1:
        return None
    total = conn.execute(
        select(tenant_keys.c.uses_reserved).where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == KeyKind.DATA.value,
            tenant_keys.c.version == version,
        )
    ).scalar_one()
    return int(total)


def update_wrapping(
    conn: Connection, *, tenant: str, kind: str, version: int, wrapped_key: bytes, kek_id: str
) -> None:
    """Replace the wrapping of a (not destroyed) key; the key itself is unchanged."""
    conn.execute(
        update(tenant_keys)
        .where(
            tenant_keys.c.tenant == tenant,
            tenant_keys.c.kind == kind,
            tenant_keys.c.version == version,
            tenant_keys.c.status != KeyStatus.DESTROYED.value,
        )
        .values(wrapped_key=wrapped_key, kek_id=kek_id)
    )


def destroy_tenant_keys(conn: Connection, tenant: str, *, at: datetime) -> Sequence[TenantKeyRow]:
    """Erase the wrapped bytes of every not-yet-destroyed key of ``tenant``; returns those rows
    as they were before (for the deletion certificate)."""
    rows = conn.execute(
        select(tenant_keys)
        .where(tenant_keys.c.tenant == tenant, tenant_keys.c.status != KeyStatus.DESTROYED.value)
        .order_by(tenant_keys.c.kind, tenant_keys.c.version)
    ).all()
    conn.execute(
        update(tenant_keys)
        .where(tenant_keys.c.tenant == tenant, tenant_keys.c.status != KeyStatus.DESTROYED.value)
        .values(wrapped_key=None, status=KeyStatus.DESTROYED.value, destroyed_at=at)
    )
    return rows
