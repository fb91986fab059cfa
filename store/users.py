"""Web app users, server-side sessions and failed logins: tables and the small functions on them.

Tables (migration ``0007_users``)::

    web_users           id → tenant, email_hash (the tenant's keyed hash of the lower-cased email,
                        for lookup), email_sealed (vault ciphertext, for display), password_hash
                        (scrypt, see :mod:`api.web.security`), created, last_login
    web_sessions        id_hash (SHA-256 of the session cookie) → user, tenant, expiry, and the OAuth
                        authorizations it started ({SHA-256 of state: provider})
    web_login_failures  key_hash (SHA-256 of tenant, email hash and client IP) → when a login failed

No plaintext email, password, session token or OAuth state is stored. Every function takes a
SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection

from schemas.errors import ConfigError

__all__ = [
    "SessionRow",
    "UserRow",
    "clear_login_failures",
    "count_login_failures",
    "create_session",
    "create_user",
    "delete_session",
    "find_user",
    "get_session",
    "get_user",
    "metadata",
    "record_login_failure",
    "set_last_login",
    "set_oauth_pending",
    "web_login_failures",
    "web_sessions",
    "web_users",
]

metadata = MetaData()

web_users = Table(
    "web_users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("email_hash", String(80), nullable=False),
    Column("email_sealed", LargeBinary, nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_login", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant", "email_hash", name="uq_web_users_tenant_email"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("oauth_pending", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_web_sessions_expires", "expires_at"),
)

web_login_failures = Table(
    "web_login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_web_login_failures_key", "key_hash", "at"),
)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for ``DateTime(timezone=True)``; every value we write is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _req(value: datetime | None) -> datetime:
    out = _aware(value)
    if out is None:  # pragma: no cover - NOT NULL columns
        raise ValueError("missing timestamp")
    return out


@dataclass(frozen=True, slots=True)
class UserRow:
    """A person who logs in to the web app on behalf of one tenant."""

    id: str
    tenant: str
    email_hash: str
    email_sealed: bytes
    password_hash: str
    created: datetime
    last_login: datetime | None


def _user(m: Any) -> UserRow:
    return UserRow(
        m["id"],
        m["tenant"],
        m["email_hash"],
        bytes(m["email_sealed"]),
        m["password_hash"],
        _req(m["created"]),
        _aware(m["last_login"]),
    )


def create_user(
    conn: Connection,
    *,
    id: str,
    tenant: str,
    email_hash: str,
    email_sealed: bytes,
    password_hash: str,
    now: datetime,
) -> UserRow:
    """Insert a user; the same email twice in one tenant is a :class:`ConfigError`."""
    if find_user(conn, tenant, email_hash) is not None:
        raise ConfigError(f"tenant {tenant!r} already has a user with this email")
    conn.execute(
        web_users.insert().values(
            id=id,
            tenant=tenant,
            email_hash=email_hash,
            email_sealed=email_sealed,
            password_hash=password_hash,
            created=now,
            last_login=None,
        )
    )
    return UserRow(id, tenant, email_hash, email_sealed, password_hash, now, None)


def find_user(conn: Connection, tenant: str, email_hash: str) -> UserRow | None:
    stmt = select(web_users).where(web_users.c.tenant == tenant, web_users.c.email_hash == email_hash)
    m = conn.execute(stmt).mappings().one_or_none()
    return None if m is None else _user(m)


def get_user(conn: Connection, id: str) -> UserRow | None:
    m = conn.execute(select(web_users).where(web_users.c.id == id)).mappings().one_or_none()
    return None if m is None else _user(m)


def set_last_login(conn: Connection, id: str, *, now: datetime) -> None:
    conn.execute(update(web_users).where(web_users.c.id == id).values(last_login=now))


# ---- sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live login: who, for which tenant, until when, and the OAuth authorizations it started."""

    id_hash: str
    user_id: str
    tenant: str
    oauth_pending: dict[str, str]
    created: datetime
    expires_at: datetime


def create_session(
    conn: Connection, *, id_hash: str, user_id: str, tenant: str, now: datetime, expires_at: datetime
) -> None:
    """Record a new session and drop sessions that expired."""
    conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
    conn.execute(
        web_sessions.insert().values(
            id_hash=id_hash,
            user_id=user_id,
            tenant=tenant,
            oauth_pending={},
            created=now,
            expires_at=expires_at,
        )
    )


def get_session(conn: Connection, id_hash: str, *, now: datetime) -> SessionRow | None:
    """The session with this hash if it has not expired."""
    m = conn.execute(select(web_sessions).where(web_sessions.c.id_hash == id_hash)).mappings().one_or_none()
    if m is None or _req(m["expires_at"]) <= now:
        return None
    return SessionRow(
        m["id_hash"],
        m["user_id"],
        m["tenant"],
        dict(m["oauth_pending"]),
        _req(m["created"]),
        _req(m["expires_at"]),
    )


def set_oauth_pending(conn: Connection, id_hash: str, pending: dict[str, str]) -> None:
    """Replace the session's in-flight OAuth authorizations ({state hash: provider})."""
    conn.execute(update(web_sessions).where(web_sessions.c.id_hash == id_hash).values(oauth_pending=pending))


def delete_session(conn: Connection, id_hash: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == id_hash))


# ---- login rate limit ----------------------------------------------------------------------------


def record_login_failure(conn: Connection, key_hash: str, *, now: datetime) -> None:
    conn.execute(web_login_failures.insert().values(key_hash=key_hash, at=now))


def count_login_failures(conn: Connection, key_hash: str, *, since: datetime) -> int:
    """Failures for this key at or after ``since``; older rows of the key are deleted on the way."""
    conn.execute(
        delete(web_login_failures).where(
            web_login_failures.c.key_hash == key_hash, web_login_failures.c.at < since
        )
    )
    stmt = select(func.count()).where(
        web_login_failures.c.key_hash == key_hash, web_login_failures.c.at >= since
    )
    return int(conn.execute(stmt).scalar_one())


def clear_login_failures(conn: Connection, key_hash: str) -> None:
    conn.execute(delete(web_login_failures).where(web_login_failures.c.key_hash == key_hash))
