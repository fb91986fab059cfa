"""Tenants: the controllers crmhub processes CRM data for (table ``tenants``, migration ``0006_syncs``).

A tenant has a display name, a home region (registry code, e.g. ``eea``: where its data is processed
and stored) and the subprocessors it authorised. Ids are immutable; nothing here deletes a tenant
(offboarding keeps the tenant row, see :mod:`api.offboard`). Every function takes a SQLAlchemy
``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, PrimaryKeyConstraint, String, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import required_aware, table_of

__all__ = ["TenantRow", "TenantTable", "create_tenant", "get_tenant", "list_tenants", "tenants"]


class TenantTable(SQLModel, table=True):
    """Declaration of the ``tenants`` table (read and written through :data:`tenants`)."""

    __tablename__ = "tenants"
    __table_args__ = (PrimaryKeyConstraint("id", name="pk_tenants"),)

    id: str = Field(sa_type=String(128), primary_key=True)
    name: str = Field(sa_type=String(255))
    home_region: str = Field(sa_type=String(32))
    authorised_subprocessors: list[str] = Field(sa_type=JSON)
    created: datetime = Field(sa_type=DateTime(timezone=True))


tenants = table_of(TenantTable)


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A controller: its home region (registry code) and the subprocessors it authorised."""

    id: str
    name: str
    home_region: str
    authorised_subprocessors: tuple[str, ...]
    created: datetime


def create_tenant(
    conn: Connection,
    *,
    id: str,
    name: str,
    home_region: str,
    authorised_subprocessors: Sequence[str],
    now: datetime,
) -> TenantRow:
    """Insert a tenant; an existing id is a :class:`ConfigError`."""
    if get_tenant(conn, id) is not None:
        raise ConfigError(f"tenant {id!r} already exists")
    conn.execute(
        tenants.insert().values(
            id=id,
            name=name,
            home_region=home_region,
            authorised_subprocessors=list(authorised_subprocessors),
            created=now,
        )
    )
    return TenantRow(id, name, home_region, tuple(authorised_subprocessors), now)


def _tenant(m: Any) -> TenantRow:
    return TenantRow(
        m["id"],
        m["name"],
        m["home_region"],
        tuple(m["authorised_subprocessors"]),
        required_aware(m["created"]),
    )


def get_tenant(conn: Connection, id: str) -> TenantRow | None:
    m = conn.execute(select(tenants).where(tenants.c.id == id)).mappings().one_or_none()
    return None if m is None else _tenant(m)


def list_tenants(conn: Connection) -> list[TenantRow]:
    """Every tenant, in id order."""
    return [_tenant(m) for m in conn.execute(select(tenants).order_by(tenants.c.id)).mappings()]
