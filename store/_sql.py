"""The small pieces every store module shares (private to :mod:`store`).

- :func:`table_of`: the Core :class:`~sqlalchemy.Table` a sqlmodel table model declares, typed (the
  repository functions query through Core, not the ORM).
- :func:`aware` / :func:`required_aware`: timestamps as read back, timezone-aware. SQLite returns
  naive datetimes for ``DateTime(timezone=True)``; every value crmhub writes is UTC, so a naive value
  read back *is* UTC.
- :func:`as_bytes`: ``LargeBinary`` values as ``bytes`` (drivers may return ``memoryview``).
- :func:`chunks`: a long ``IN (...)`` list cut into pieces of :data:`IN_CHUNK` bound parameters.
- :func:`dialect_insert`: the dialect's ``INSERT`` (with ``ON CONFLICT``) for upserts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Table, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from schemas.errors import ConfigError

__all__ = [
    "IN_CHUNK",
    "as_bytes",
    "aware",
    "chunks",
    "dialect_insert",
    "required_aware",
    "table_of",
]

IN_CHUNK = 500
"""Bound parameters per ``IN (...)`` list: well under SQLite's and PostgreSQL's limits."""

_T = TypeVar("_T")


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a sqlmodel table model (``model.__table__``, which type checkers cannot see)."""
    table = inspect(model).local_table
    if not isinstance(table, Table):  # pragma: no cover - every table model maps one Table
        raise TypeError(f"{model.__name__} is not a table model")
    return table


def aware(value: datetime | None) -> datetime | None:
    """``value`` with its timezone: a naive value (SQLite) is UTC, as everything crmhub writes."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def required_aware(value: datetime | None) -> datetime:
    """:func:`aware` for a NOT NULL column."""
    out = aware(value)
    if out is None:  # pragma: no cover - NOT NULL columns
        raise ValueError("missing timestamp")
    return out


def as_bytes(value: bytes | memoryview | None) -> bytes | None:
    """A ``LargeBinary`` value as ``bytes`` (``None`` stays ``None``)."""
    return None if value is None else bytes(value)


def chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``values`` in slices of at most :data:`IN_CHUNK` (one ``IN (...)`` list each)."""
    for i in range(0, len(values), IN_CHUNK):
        yield values[i : i + IN_CHUNK]


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT INTO table`` of the connection's dialect, which offers ``on_conflict_do_update`` and
    ``on_conflict_do_nothing``; a :class:`ConfigError` on a dialect crmhub does not support."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"upserts are not implemented for {dialect}")  # pragma: no cover - make_engine
