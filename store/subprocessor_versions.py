"""The versioned subprocessor registry (Art. 28(2)): its versions and the controllers' objections
(tables ``subprocessor_versions`` and ``subprocessor_objections``, migration
``0016_subprocessor_versions``).

A version holds the registry's content without the tenants' residency (regions, subprocessors,
endpoints, routes, contacts), its SHA-256, a one-line summary, when it was proposed, when its
objection window closes and, once closed, when it was applied. Version 1 is the registry crmhub ran
under before the first proposal (applied when recorded). An objection is one tenant's "not this
version" with its choice: ``keep`` (its syncs keep running on the last version it accepted) or
``stop`` (its syncs stop). Rows are never updated except ``applied``; nothing is deleted. Every
function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, PrimaryKeyConstraint, String, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import aware, required_aware, table_of

__all__ = [
    "ObjectionChoice",
    "ObjectionRow",
    "SubprocessorObjectionTable",
    "SubprocessorVersionTable",
    "VersionRow",
    "add_objection",
    "add_version",
    "get_version",
    "latest_version",
    "list_objections",
    "list_versions",
    "mark_applied",
    "objections",
    "version_heads",
    "versions",
]


class ObjectionChoice(StrEnum):
    """What an objecting tenant's syncs do once the change applies to the others."""

    KEEP = "keep"  # keep running on the last version the tenant accepted
    STOP = "stop"  # stop: every run is refused until the objection is resolved


class SubprocessorVersionTable(SQLModel, table=True):
    """Declaration of the ``subprocessor_versions`` table (read and written through :data:`versions`)."""

    __tablename__ = "subprocessor_versions"
    __table_args__ = (PrimaryKeyConstraint("version", name="pk_subprocessor_versions"),)

    version: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    content: dict[str, Any] = Field(sa_type=JSON)
    content_hash: str = Field(sa_type=String(64))
    summary: str = Field(sa_type=String(500))
    proposed: datetime = Field(sa_type=DateTime(timezone=True))
    window_closes: datetime = Field(sa_type=DateTime(timezone=True))
    applied: datetime | None = Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


class SubprocessorObjectionTable(SQLModel, table=True):
    """Declaration of the ``subprocessor_objections`` table (read and written through :data:`objections`)."""

    __tablename__ = "subprocessor_objections"
    __table_args__ = (PrimaryKeyConstraint("version", "tenant", name="pk_subprocessor_objections"),)

    version: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    tenant: str = Field(sa_type=String(128), primary_key=True)
    choice: str = Field(sa_type=String(16))
    objected: datetime = Field(sa_type=DateTime(timezone=True))
    by: str = Field(sa_type=String(128), description="who recorded it: cli, or web:<user id>")


versions = table_of(SubprocessorVersionTable)
objections = table_of(SubprocessorObjectionTable)


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One registry version (see the module docstring)."""

    version: int
    content: dict[str, Any]
    content_hash: str
    summary: str
    proposed: datetime
    window_closes: datetime
    applied: datetime | None


@dataclass(frozen=True, slots=True)
class ObjectionRow:
    """A tenant's objection to ``version`` and what its syncs do meanwhile."""

    version: int
    tenant: str
    choice: ObjectionChoice
    objected: datetime
    by: str


def _version(m: Any) -> VersionRow:
    return VersionRow(
        m["version"],
        dict(m["content"]),
        m["content_hash"],
        m["summary"],
        required_aware(m["proposed"]),
        required_aware(m["window_closes"]),
        aware(m["applied"]),
    )


def add_version(
    conn: Connection,
    *,
    version: int,
    content: dict[str, Any],
    content_hash: str,
    summary: str,
    proposed: datetime,
    window_closes: datetime,
    applied: datetime | None = None,
) -> VersionRow:
    """Insert a version; a taken number is a :class:`ConfigError` (another proposal was first)."""
    if get_version(conn, version) is not None:
        raise ConfigError(f"subprocessor registry version {version} exists already; propose again")
    values = {
        "version": version, "content": content, "content_hash": content_hash, "summary": summary,
        "proposed": proposed, "window_closes": window_closes, "applied": applied,
    }  # fmt: skip
    conn.execute(versions.insert().values(**values))
    return _version(values)


def get_version(conn: Connection, version: int) -> VersionRow | None:
    m = conn.execute(select(versions).where(versions.c.version == version)).mappings().first()
    return _version(m) if m else None


def latest_version(conn: Connection) -> int:
    """The highest version number recorded (0: the registry is not versioned yet)."""
    return int(conn.execute(select(func.coalesce(func.max(versions.c.version), 0))).scalar_one())


def version_heads(conn: Connection) -> list[tuple[int, bool, str]]:
    """(version, applied?, content hash) of every version, oldest first, without the content."""
    v = versions.c
    rows = conn.execute(select(v.version, v.applied, v.content_hash).order_by(v.version))
    return [(int(n), applied is not None, str(digest)) for n, applied, digest in rows]


def list_versions(conn: Connection) -> list[VersionRow]:
    """Every version, oldest first."""
    return [_version(m) for m in conn.execute(select(versions).order_by(versions.c.version)).mappings()]


def mark_applied(conn: Connection, version: int, *, at: datetime) -> None:
    conn.execute(versions.update().where(versions.c.version == version).values(applied=at))


def add_objection(
    conn: Connection, *, version: int, tenant: str, choice: ObjectionChoice, at: datetime, by: str
) -> ObjectionRow:
    """Record ``tenant``'s objection to ``version``; a second one is a :class:`ConfigError`."""
    exists = conn.execute(
        select(objections.c.choice).where(objections.c.version == version, objections.c.tenant == tenant)
    ).first()
    if exists is not None:
        raise ConfigError(f"tenant {tenant!r} has already objected to version {version} ({exists[0]})")
    conn.execute(
        objections.insert().values(version=version, tenant=tenant, choice=choice.value, objected=at, by=by)
    )
    return ObjectionRow(version, tenant, choice, at, by)


def list_objections(
    conn: Connection, *, tenant: str | None = None, version: int | None = None
) -> list[ObjectionRow]:
    """Objections (of one tenant, to one version), by version then tenant."""
    query = select(objections).order_by(objections.c.version, objections.c.tenant)
    if tenant is not None:
        query = query.where(objections.c.tenant == tenant)
    if version is not None:
        query = query.where(objections.c.version == version)
    return [
        ObjectionRow(
            m["version"], m["tenant"], ObjectionChoice(m["choice"]), required_aware(m["objected"]), m["by"]
        )
        for m in conn.execute(query).mappings()
    ]
