"""Processing instructions: the controller's documented instruction, versioned (table
``instructions``, migration ``0006_syncs``).

One row per (tenant, version): the validated instruction as JSON and its content hash. Versions are
immutable — a changed instruction is stored as a new version, and a run cites the version it ran
under. Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, PrimaryKeyConstraint, String, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import required_aware, table_of

__all__ = [
    "InstructionRow",
    "InstructionTable",
    "add_instruction",
    "get_instruction",
    "instructions",
    "latest_instruction",
]


class InstructionTable(SQLModel, table=True):
    """Declaration of the ``instructions`` table (read and written through :data:`instructions`)."""

    __tablename__ = "instructions"
    __table_args__ = (PrimaryKeyConstraint("tenant", "version", name="pk_instructions"),)

    tenant: str = Field(sa_type=String(128), primary_key=True)
    version: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    content: dict[str, Any] = Field(sa_type=JSON)
    content_hash: str = Field(sa_type=String(80))
    created: datetime = Field(sa_type=DateTime(timezone=True))


instructions = table_of(InstructionTable)


@dataclass(frozen=True, slots=True)
class InstructionRow:
    """One stored version of a tenant's processing instruction (content as validated JSON)."""

    tenant: str
    version: int
    content: dict[str, Any]
    content_hash: str
    created: datetime


def add_instruction(
    conn: Connection,
    *,
    tenant: str,
    version: int,
    content: Mapping[str, Any],
    content_hash: str,
    now: datetime,
) -> InstructionRow:
    """Store an instruction version. Versions are immutable: storing a version again with other
    content is a :class:`ConfigError` (bump the version); the same content again is a no-op."""
    existing = get_instruction(conn, tenant, version)
    if existing is not None:
        if existing.content_hash != content_hash:
            raise ConfigError(
                f"instruction v{version} of tenant {tenant!r} exists with other content; "
                "store the change as a new version"
            )
        return existing
    conn.execute(
        instructions.insert().values(
            tenant=tenant, version=version, content=dict(content), content_hash=content_hash, created=now
        )
    )
    return InstructionRow(tenant, version, dict(content), content_hash, now)


def _instruction(m: Any) -> InstructionRow:
    return InstructionRow(
        m["tenant"], m["version"], dict(m["content"]), m["content_hash"], required_aware(m["created"])
    )


def get_instruction(conn: Connection, tenant: str, version: int) -> InstructionRow | None:
    stmt = select(instructions).where(instructions.c.tenant == tenant, instructions.c.version == version)
    m = conn.execute(stmt).mappings().one_or_none()
    return None if m is None else _instruction(m)


def latest_instruction(conn: Connection, tenant: str) -> InstructionRow | None:
    """The tenant's highest stored instruction version (the one in force for new runs), or None."""
    stmt = (
        select(instructions)
        .where(instructions.c.tenant == tenant)
        .order_by(instructions.c.version.desc())
        .limit(1)
    )
    m = conn.execute(stmt).mappings().one_or_none()
    return None if m is None else _instruction(m)
