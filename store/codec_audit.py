"""Audit trail of the codec server: one row per encode/decode request that named a valid token.

Who (the token *id*, never the token), when, which namespace, which operation, how many payloads,
and how it ended (``ok``, ``forbidden`` — token not bound to that namespace —, ``failed`` — a
payload did not decrypt or the body was malformed). Rows are appended, never updated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, Index, Integer, PrimaryKeyConstraint, String, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import required_aware, table_of

__all__ = [
    "AuditOutcome",
    "ClientUse",
    "CodecAuditRow",
    "CodecAuditTable",
    "TokenUse",
    "codec_audit",
    "insert_audit",
    "list_audit",
    "token_clients",
    "token_use",
]


class CodecAuditTable(SQLModel, table=True):
    """Declaration of the ``codec_audit`` table (migration ``0005_codec_audit``; read and written
    through :data:`codec_audit`)."""

    __tablename__ = "codec_audit"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_codec_audit"),
        Index("ix_codec_audit_namespace_at", "namespace", "at"),
    )

    id: int = Field(sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: datetime = Field(sa_type=DateTime(timezone=True))
    token_id: str = Field(sa_type=String(64))
    namespace: str = Field(sa_type=String(255))
    operation: str = Field(sa_type=String(16))
    payloads: int = Field(sa_type=Integer)
    outcome: str = Field(sa_type=String(16))
    client: str | None = Field(sa_type=String(255))


codec_audit = table_of(CodecAuditTable)


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
    conn.execute(codec_audit.insert().values(**asdict(row)))


def list_audit(conn: Connection, *, namespace: str | None = None, limit: int = 1000) -> list[CodecAuditRow]:
    """The newest ``limit`` rows (of one namespace or all), oldest first."""
    query = select(codec_audit).order_by(codec_audit.c.id.desc()).limit(limit)
    if namespace is not None:
        query = query.where(codec_audit.c.namespace == namespace)
    rows = conn.execute(query).all()
    return [
        CodecAuditRow(
            at=required_aware(at),
            token_id=token_id,
            namespace=ns,
            operation=operation,
            payloads=payloads,
            outcome=outcome,
            client=client,
        )
        for _id, at, token_id, ns, operation, payloads, outcome, client in reversed(rows)
    ]


@dataclass(frozen=True, slots=True)
class TokenUse:
    """One token's requests of one operation and outcome in a window: how many, payloads, first, last."""

    token_id: str
    operation: str
    outcome: str
    requests: int
    payloads: int
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class ClientUse:
    """A client address a token decoded from in a window, and when first."""

    token_id: str
    client: str
    first: datetime


def _namespaces(conn: Connection, limit: int) -> list[str]:
    # Through ix_codec_audit_namespace_at: the window queries below then range-scan that index.
    query = select(codec_audit.c.namespace).distinct().order_by(codec_audit.c.namespace).limit(limit)
    return list(conn.execute(query).scalars())


def token_use(conn: Connection, start: datetime, end: datetime, *, limit: int) -> list[TokenUse]:
    """Per token, operation and outcome, the requests in ``[start, end)`` (at most ``limit`` groups)."""
    c = codec_audit.c
    namespaces = _namespaces(conn, limit)
    counted = (func.count(), func.sum(c.payloads), func.min(c.at), func.max(c.at))
    query = (
        select(c.token_id, c.operation, c.outcome, *counted)
        .where(c.namespace.in_(namespaces), c.at >= start, c.at < end)
        .group_by(c.token_id, c.operation, c.outcome)
        .order_by(c.token_id, c.operation, c.outcome)
        .limit(limit)
    )
    return [
        TokenUse(t, op, out, int(n), int(p or 0), required_aware(lo), required_aware(hi))
        for t, op, out, n, p, lo, hi in conn.execute(query).all()
    ]


def token_clients(conn: Connection, start: datetime, end: datetime, *, limit: int) -> list[ClientUse]:
    """The (token, client) pairs of successful decodes in ``[start, end)`` (at most ``limit``)."""
    c = codec_audit.c
    namespaces = _namespaces(conn, limit)
    query = (
        select(c.token_id, c.client, func.min(c.at))
        .where(c.namespace.in_(namespaces), c.at >= start, c.at < end)
        .where(c.operation == "decode", c.outcome == AuditOutcome.OK.value)
        .where(c.client.is_not(None))
        .group_by(c.token_id, c.client)
        .order_by(c.token_id, c.client)
        .limit(limit)
    )
    return [ClientUse(t, client, required_aware(lo)) for t, client, lo in conn.execute(query).all()]
