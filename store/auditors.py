"""Auditor API tokens, the audit access log, and sealed data-subject-request exports.

Tables (migration ``0008_auditors``)::

    auditor_tokens    id → tenant, name, SHA-256 of the secret, created/expires/revoked/last used
    audit_access_log  one row per *granted* audit API request: token id (never the token), tenant,
                      route, query parameters (periods, indexes, formats — no PII), the client
                      address as a keyed hash (never the address)
    audit_access_denied  denied requests, aggregated (migration ``0019_access_log_bounds``): one row
                      per (hour, reason, client hash) with a count, first/last time and the last
                      route; at most :data:`DENIED_ROWS_PER_BUCKET` clients per hour (the rest
                      counted under :data:`OVERFLOW_CLIENT`), kept :data:`DENIED_RETENTION`
    dsr_exports       request id → the vault-sealed JSON of a data-subject export, until the CLI
                      that started the request fetches it (expires after a day)

A token is ``crmhub_aud_<id>_<secret>``: the id finds the row, the secret (256 bits) is compared
by hash in constant time. The token is shown once, at creation; the database holds its hash only.
Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import aware, dialect_insert, required_aware, table_of

__all__ = [
    "DENIED_RETENTION",
    "DENIED_ROWS_PER_BUCKET",
    "OVERFLOW_CLIENT",
    "TOKEN_PREFIX",
    "AccessOutcome",
    "AccessRow",
    "AuditAccessTable",
    "AuditDeniedTable",
    "AuditorToken",
    "AuditorTokenTable",
    "DenialReason",
    "DsrExportTable",
    "audit_access_denied",
    "audit_access_log",
    "auditor_tokens",
    "authenticate",
    "count_denied_rows",
    "create_token",
    "dsr_exports",
    "list_access",
    "list_tokens",
    "log_access",
    "log_denied",
    "pop_dsr_export",
    "put_dsr_export",
    "revoke_token",
]

TOKEN_PREFIX = "crmhub_aud_"  # noqa: S105 - a prefix, not a secret


class AuditorTokenTable(SQLModel, table=True):
    """Declaration of the ``auditor_tokens`` table (read and written through :data:`auditor_tokens`)."""

    __tablename__ = "auditor_tokens"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_auditor_tokens"),
        Index("ix_auditor_tokens_tenant", "tenant"),
    )

    id: str = Field(sa_type=String(32), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    name: str = Field(sa_type=String(255))
    token_hash: str = Field(sa_type=String(64))
    created: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    last_used: datetime | None = Field(sa_type=DateTime(timezone=True))


class AuditAccessTable(SQLModel, table=True):
    """Declaration of the ``audit_access_log`` table (read and written through :data:`audit_access_log`)."""

    __tablename__ = "audit_access_log"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_audit_access_log"),
        Index("ix_audit_access_log_tenant", "tenant", "at"),
    )

    id: int = Field(sa_type=BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: datetime = Field(sa_type=DateTime(timezone=True))
    token_id: str | None = Field(sa_type=String(32))
    tenant: str | None = Field(sa_type=String(128))
    route: str = Field(sa_type=String(255))
    query: str = Field(sa_type=String(500))
    outcome: str = Field(sa_type=String(16))
    client: str | None = Field(sa_type=String(255))


class AuditDeniedTable(SQLModel, table=True):
    """Declaration of the ``audit_access_denied`` table (read and written through
    :data:`audit_access_denied`)."""

    __tablename__ = "audit_access_denied"
    __table_args__ = (PrimaryKeyConstraint("bucket", "reason", "client_hash", name="pk_audit_access_denied"),)

    bucket: datetime = Field(sa_type=DateTime(timezone=True), primary_key=True)
    reason: str = Field(sa_type=String(16), primary_key=True)
    client_hash: str = Field(sa_type=String(64), primary_key=True)
    count: int = Field(sa_type=Integer)
    first_at: datetime = Field(sa_type=DateTime(timezone=True))
    last_at: datetime = Field(sa_type=DateTime(timezone=True))
    route: str = Field(sa_type=String(255))


class DsrExportTable(SQLModel, table=True):
    """Declaration of the ``dsr_exports`` table (read and written through :data:`dsr_exports`)."""

    __tablename__ = "dsr_exports"
    __table_args__ = (PrimaryKeyConstraint("request_id", name="pk_dsr_exports"),)

    request_id: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    sealed: bytes = Field(sa_type=LargeBinary)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


auditor_tokens = table_of(AuditorTokenTable)
audit_access_log = table_of(AuditAccessTable)
audit_access_denied = table_of(AuditDeniedTable)
dsr_exports = table_of(DsrExportTable)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class AccessOutcome(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"  # no token, unknown, revoked or expired


class DenialReason(StrEnum):
    """Why a request was denied (the aggregate's key; never the token itself)."""

    NO_TOKEN = "no_token"  # noqa: S105 - a reason, not a secret
    NOT_A_TOKEN = "not_a_token"  # noqa: S105 - not of the form crmhub_aud_<id>_<secret>
    REJECTED = "rejected"  # one of our ids, but unknown, wrong secret, revoked or expired


DENIED_ROWS_PER_BUCKET = 256
"""Distinct clients one hour of denied requests keeps a row for; the rest share one row per reason."""

OVERFLOW_CLIENT = "overflow"
"""The client hash of denied requests beyond :data:`DENIED_ROWS_PER_BUCKET` in their hour."""

DENIED_RETENTION = timedelta(days=90)
"""How long denied-request aggregates are kept (older hours are deleted as new denials arrive)."""

_BUCKET = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AuditorToken:
    """An auditor's read-only token for one tenant (metadata only; the secret is not stored)."""

    id: str
    tenant: str
    name: str
    created: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def _token(m: Any) -> AuditorToken:
    return AuditorToken(
        m["id"],
        m["tenant"],
        m["name"],
        required_aware(m["created"]),
        aware(m["expires_at"]),
        aware(m["revoked_at"]),
        aware(m["last_used"]),
    )


def create_token(
    conn: Connection, *, tenant: str, name: str, now: datetime, expires_at: datetime | None = None
) -> tuple[AuditorToken, str]:
    """Create a token for ``tenant``; returns its metadata and the token text (shown once)."""
    if not tenant or not name:
        raise ConfigError("an auditor token needs a tenant and a name")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        auditor_tokens.insert().values(
            id=token_id,
            tenant=tenant,
            name=name[:255],
            token_hash=_hash(secret),
            created=now,
            expires_at=expires_at,
            revoked_at=None,
            last_used=None,
        )
    )
    row = AuditorToken(token_id, tenant, name[:255], now, expires_at, None, None)
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


def token_id_of(token: str) -> str | None:
    """The id part of a presented token (for the access log), or None if it is not one of ours."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, _ = token[len(TOKEN_PREFIX) :].partition("_")
    return (
        token_id if sep and len(token_id) == 16 and all(c in "0123456789abcdef" for c in token_id) else None
    )


def authenticate(conn: Connection, token: str, *, now: datetime) -> AuditorToken | None:
    """The usable token row ``token`` names, or None (unknown, wrong secret, revoked, expired).
    Records ``last_used``."""
    token_id = token_id_of(token)
    if token_id is None:
        return None
    secret = token[len(TOKEN_PREFIX) + len(token_id) + 1 :]
    m = conn.execute(select(auditor_tokens).where(auditor_tokens.c.id == token_id)).mappings().one_or_none()
    if m is None or not hmac.compare_digest(str(m["token_hash"]), _hash(secret)):
        return None
    row = _token(m)
    if not row.usable(now):
        return None
    conn.execute(update(auditor_tokens).where(auditor_tokens.c.id == token_id).values(last_used=now))
    return row


def list_tokens(conn: Connection, tenant: str | None = None) -> list[AuditorToken]:
    """Tokens (of one tenant or all), oldest first."""
    stmt = select(auditor_tokens)
    if tenant is not None:
        stmt = stmt.where(auditor_tokens.c.tenant == tenant)
    return [_token(m) for m in conn.execute(stmt.order_by(auditor_tokens.c.created)).mappings()]


def revoke_token(conn: Connection, token_id: str, *, now: datetime) -> bool:
    """Revoke a token; False if there is no such (unrevoked) token."""
    result = conn.execute(
        update(auditor_tokens)
        .where(auditor_tokens.c.id == token_id, auditor_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class AccessRow:
    at: datetime
    token_id: str | None
    tenant: str | None
    route: str
    query: str
    outcome: str
    client: str | None
    count: int = 1


def log_access(
    conn: Connection,
    *,
    at: datetime,
    token_id: str | None,
    tenant: str | None,
    route: str,
    query: str,
    outcome: AccessOutcome,
    client: str | None,
) -> None:
    """Append one access-log row (the caller passes no PII: route, parameters, token id, the client
    as a keyed hash). For granted requests; denied ones go to :func:`log_denied`."""
    conn.execute(
        audit_access_log.insert().values(
            at=at,
            token_id=token_id,
            tenant=tenant,
            route=route[:255],
            query=query[:500],
            outcome=outcome.value,
            client=client[:255] if client else None,
        )
    )


def _bucket(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def log_denied(
    conn: Connection, *, at: datetime, reason: DenialReason, client_hash: str | None, route: str
) -> None:
    """Count one denied request in its hour's row for ``(reason, client_hash)`` (one upsert), so
    anonymous traffic cannot grow the table without bound: per hour at most
    :data:`DENIED_ROWS_PER_BUCKET` clients get a row of their own, the rest are counted under
    :data:`OVERFLOW_CLIENT`; hours older than :data:`DENIED_RETENTION` are deleted."""
    t = audit_access_denied
    bucket = _bucket(at)
    conn.execute(delete(t).where(t.c.bucket < bucket - DENIED_RETENTION))
    client = (client_hash or "-")[:64]
    exists = select(t.c.count).where(
        t.c.bucket == bucket, t.c.reason == reason.value, t.c.client_hash == client
    )
    if conn.execute(exists).first() is None:
        rows = conn.execute(select(func.count()).select_from(t).where(t.c.bucket == bucket)).scalar_one()
        if rows >= DENIED_ROWS_PER_BUCKET:
            client = OVERFLOW_CLIENT
    insert = dialect_insert(conn, t).values(
        bucket=bucket, reason=reason.value, client_hash=client, count=1, first_at=at, last_at=at,
        route=route[:255],
    )  # fmt: skip
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[t.c.bucket, t.c.reason, t.c.client_hash],
            set_={"count": t.c.count + 1, "last_at": at, "route": route[:255]},
        )
    )


def count_denied_rows(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(audit_access_denied)).scalar_one())


def list_access(conn: Connection, tenant: str | None = None, *, limit: int = 1000) -> list[AccessRow]:
    """Access-log rows (of one tenant or all), newest first: every granted request, and (without
    ``tenant``: a denied request names no tenant) the denied aggregates, each as one row with its
    count, at its last request."""
    stmt = select(audit_access_log)
    if tenant is not None:
        stmt = stmt.where(audit_access_log.c.tenant == tenant)
    stmt = stmt.order_by(audit_access_log.c.id.desc()).limit(limit)
    out = _granted(conn, stmt)
    if tenant is None:
        d = audit_access_denied
        denied = select(d).order_by(d.c.last_at.desc()).limit(limit)
        out += [
            AccessRow(required_aware(m["last_at"]), None, None, m["route"], m["reason"],
                      AccessOutcome.DENIED.value, m["client_hash"], int(m["count"]))
            for m in conn.execute(denied).mappings()
        ]  # fmt: skip
        out.sort(key=lambda r: r.at, reverse=True)  # stable: granted rows keep their id order
    return out[:limit]


def _granted(conn: Connection, stmt: Any) -> list[AccessRow]:
    out = []
    for m in conn.execute(stmt).mappings():
        out.append(
            AccessRow(
                required_aware(m["at"]),
                m["token_id"],
                m["tenant"],
                m["route"],
                m["query"],
                m["outcome"],
                m["client"],
            )
        )
    return out


def put_dsr_export(
    conn: Connection, *, request_id: str, tenant: str, sealed: bytes, now: datetime, expires_at: datetime
) -> None:
    """Store (or replace) the sealed export of a data-subject request."""
    conn.execute(delete(dsr_exports).where(dsr_exports.c.request_id == request_id))
    conn.execute(
        dsr_exports.insert().values(
            request_id=request_id, tenant=tenant, sealed=sealed, created=now, expires_at=expires_at
        )
    )


def pop_dsr_export(conn: Connection, tenant: str, request_id: str) -> bytes | None:
    """Take (read and delete) the sealed export of a request of ``tenant``; None if absent."""
    stmt = select(dsr_exports.c.sealed).where(
        dsr_exports.c.request_id == request_id, dsr_exports.c.tenant == tenant
    )
    sealed = conn.execute(stmt).scalar_one_or_none()
    if sealed is None:
        return None
    conn.execute(delete(dsr_exports).where(dsr_exports.c.request_id == request_id))
    return bytes(sealed)


def purge_dsr_exports(conn: Connection, *, now: datetime) -> int:
    """Delete exports nobody fetched before they expired."""
    return int(conn.execute(delete(dsr_exports).where(dsr_exports.c.expires_at <= now)).rowcount)
