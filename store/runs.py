"""Runs of a sync: when, how and how it ended, with the schema it was planned with and the drift it
reported (table ``sync_runs``, migrations ``0006_syncs`` and ``0009_schema_contract``).

A run is keyed by its run id (the workflow run that owns it) and belongs to one sync. It records
mode, trigger, start and finish, status, counts (a :class:`~schemas.sync.RunCounts` dump) and a
message without PII (at most 1,000 characters); ``planned_schema`` is the source schema (field →
describe type) at plan time and ``drift`` the changes it already reported, so each is reported once
per run. Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, PrimaryKeyConstraint, String, Update, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import aware, required_aware, table_of

__all__ = [
    "RunRow",
    "SyncRunTable",
    "add_run_drift",
    "finish_run",
    "get_run",
    "list_runs",
    "run_schema",
    "set_planned_schema",
    "start_run",
    "sync_runs",
]

_MESSAGE = 1000  # characters of a run's message (the column's length)


class SyncRunTable(SQLModel, table=True):
    """Declaration of the ``sync_runs`` table (read and written through :data:`sync_runs`)."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        PrimaryKeyConstraint("run_id", name="pk_sync_runs"),
        Index("ix_sync_runs_sync", "tenant", "sync_id", "started"),
    )

    run_id: str = Field(sa_type=String(128), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    sync_id: str = Field(sa_type=String(128))
    mode: str = Field(sa_type=String(16))
    trigger: str = Field(sa_type=String(32))
    started: datetime = Field(sa_type=DateTime(timezone=True))
    finished: datetime | None = Field(sa_type=DateTime(timezone=True))
    status: str = Field(sa_type=String(32))
    counts: dict[str, int] = Field(sa_type=JSON)
    message: str = Field(sa_type=String(_MESSAGE))
    planned_schema: dict[str, str] | None = Field(sa_type=JSON)
    drift: list[str] | None = Field(sa_type=JSON)


sync_runs = table_of(SyncRunTable)


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run of a sync. ``counts`` is a :class:`~schemas.sync.RunCounts` dump."""

    run_id: str
    tenant: str
    sync_id: str
    mode: str
    trigger: str
    started: datetime
    finished: datetime | None
    status: str
    counts: dict[str, int]
    message: str


def _run(m: Any) -> RunRow:
    return RunRow(
        m["run_id"],
        m["tenant"],
        m["sync_id"],
        m["mode"],
        m["trigger"],
        required_aware(m["started"]),
        aware(m["finished"]),
        m["status"],
        dict(m["counts"]),
        m["message"],
    )


def _update(run_id: str) -> Update:
    """``UPDATE sync_runs`` of the one run ``run_id``."""
    return update(sync_runs).where(sync_runs.c.run_id == run_id)


def start_run(
    conn: Connection,
    *,
    run_id: str,
    tenant: str,
    sync_id: str,
    mode: str,
    trigger: str,
    status: str,
    now: datetime,
    message: str = "",
) -> RunRow:
    """Record a run as started (idempotent: a retried plan updates mode/status/message of the same run)."""
    existing = get_run(conn, run_id)
    if existing is None:
        conn.execute(
            sync_runs.insert().values(
                run_id=run_id,
                tenant=tenant,
                sync_id=sync_id,
                mode=mode,
                trigger=trigger,
                started=now,
                finished=None,
                status=status,
                counts={},
                message=message[:_MESSAGE],
            )
        )
    else:
        if (existing.tenant, existing.sync_id) != (tenant, sync_id):
            raise ConfigError(f"run id {run_id!r} belongs to another sync")
        conn.execute(_update(run_id).values(mode=mode, status=status, message=message[:_MESSAGE]))
    run = get_run(conn, run_id)
    assert run is not None
    return run


def finish_run(
    conn: Connection,
    run_id: str,
    *,
    status: str,
    counts: Mapping[str, int],
    message: str,
    now: datetime,
) -> None:
    """Close a run with its final status, counts and a message (no PII)."""
    conn.execute(
        _update(run_id).values(status=status, counts=dict(counts), message=message[:_MESSAGE], finished=now)
    )


def set_planned_schema(conn: Connection, run_id: str, schema: Mapping[str, str]) -> None:
    """Record the source schema (field → describe type) the run was planned with."""
    conn.execute(_update(run_id).values(planned_schema=dict(sorted(schema.items()))))


def run_schema(conn: Connection, run_id: str) -> tuple[dict[str, str], list[str]] | None:
    """The run's planned source schema and the drift it reported so far; None if none was recorded."""
    stmt = select(sync_runs.c.planned_schema, sync_runs.c.drift).where(sync_runs.c.run_id == run_id)
    row = conn.execute(stmt).one_or_none()
    if row is None or not isinstance(row[0], dict):
        return None
    return {str(k): str(v) for k, v in row[0].items()}, [str(d) for d in (row[1] or [])]


def add_run_drift(conn: Connection, run_id: str, lines: Sequence[str]) -> None:
    """Remember drift the run reported (so each change is reported once per run)."""
    if not lines:
        return
    current = run_schema(conn, run_id)
    seen = current[1] if current else []
    merged = [*seen, *(x for x in lines if x not in seen)]
    conn.execute(_update(run_id).values(drift=merged))


def get_run(conn: Connection, run_id: str) -> RunRow | None:
    m = conn.execute(select(sync_runs).where(sync_runs.c.run_id == run_id)).mappings().one_or_none()
    return None if m is None else _run(m)


def list_runs(conn: Connection, tenant: str, sync_id: str, *, limit: int = 50) -> list[RunRow]:
    """The sync's runs, newest first."""
    stmt = (
        select(sync_runs)
        .where(sync_runs.c.tenant == tenant, sync_runs.c.sync_id == sync_id)
        .order_by(sync_runs.c.started.desc(), sync_runs.c.run_id.desc())
        .limit(limit)
    )
    return [_run(m) for m in conn.execute(stmt).mappings()]
