"""Audit trail of the codec server: one row per encode/decode request that named a valid token.

Who (the token *id*, never the token), when, which namespace, which operation, how many payloads,
and how it ended (``ok``, ``forbidden`` — token not bound to that namespace —, ``failed`` — a
payload did not decrypt or the body was malformed). Rows are appended, never updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, select
from sqlalchemy.engine import Connection

__all__ = [
    "AuditOutcome",
    "CodecAuditRow",
    "codec_audit",
    "insert_audit",
    "list_audit",
]

metadata = MetaData()

codec_audit = Table(
    "codec_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("token_id", String(64), nullable=False),
    Column("namespace", String(255), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("payloads", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("client", String(255), nullable=True),
)


class AuditOutcome(StrEnum):
    """How an audited codec request ended."""

    OK = "ok"
    FORBIDDEN = "forbidden"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CodecAuditRow:
    """One audited codec request (``at`` is timezone-aware UTC)."""

    at: datetime
    token_id: str
    namespace: str
    operation: str
    payloads: int
    outcome: str
    client: str | None


def insert_audit(conn: Connection, row: CodecAuditRow) -> None:
    """Append one audit row (the caller commits)."""
    conn.execute(
        codec_audit.insert().values(
            at=row.at,
            token_id=row.token_id,
            namespace=row.namespace,
            operation=row.operation,
            payloads=row.payloads,
            outcome=row.outcome,
            client=row.client,
        )
    )


def list_audit(conn: Connection, *, namespace: str | None = None, limit: int = 1000) -> list[CodecAuditRow]:
    """The newest ``limit`` rows (of one namespace or all), oldest first."""
    query = select(codec_audit).order_by(codec_audit.c.id.desc()).limit(limit)
    if namespace is not None:
        query = query.where(codec_audit.c.namespace == namespace)
    rows = conn.execute(query).all()
    return [
        CodecAuditRow(
            at=at if at.tzinfo else at.replace(tzinfo=UTC),  # SQLite drops the zone; written in UTC
            token_id=token_id,
            namespace=ns,
            operation=operation,
            payloads=payloads,
            outcome=outcome,
            client=client,
        )
        for _id, at, token_id, ns, operation, payloads, outcome, client in reversed(rows)
    ]
