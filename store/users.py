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
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.errors import ConfigError
from store._sql import aware, required_aware, table_of

__all__ = [
    "SessionRow",
    "UserRow",
    "WebLoginFailureTable",
    "WebSessionTable",
    "WebUserTable",
    "clear_login_failures",
    "count_login_failures",
    "create_session",
    "create_user",
    "delete_session",
    "delete_tenant_users",
    "find_user",
    "get_session",
    "get_user",
    "record_login_failure",
    "set_last_login",
    "set_oauth_pending",
    "web_login_failures",
    "web_sessions",
    "web_users",
]


class WebUserTable(SQLModel, table=True):
    """Declaration of the ``web_users`` table (read and written through :data:`web_users`)."""

    __tablename__ = "web_users"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_web_users"),
        UniqueConstraint("tenant", "email_hash", name="uq_web_users_tenant_email"),
    )

    id: str = Field(sa_type=String(36), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    email_hash: str = Field(sa_type=String(80))
    email_sealed: bytes = Field(sa_type=LargeBinary)
    password_hash: str = Field(sa_type=String(255))
    created: datetime = Field(sa_type=DateTime(timezone=True))
    last_login: datetime | None = Field(sa_type=DateTime(timezone=True))


class WebSessionTable(SQLModel, table=True):
    """Declaration of the ``web_sessions`` table (read and written through :data:`web_sessions`)."""

    __tablename__ = "web_sessions"
    __table_args__ = (
        PrimaryKeyConstraint("id_hash", name="pk_web_sessions"),
        Index("ix_web_sessions_expires", "expires_at"),
    )

    id_hash: str = Field(sa_type=String(64), primary_key=True)
    user_id: str = Field(sa_type=String(36))
    tenant: str = Field(sa_type=String(128))
    oauth_pending: dict[str, str] = Field(sa_type=JSON)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


class WebLoginFailureTable(SQLModel, table=True):
    """Declaration of the ``web_login_failures`` table (read and written through
    :data:`web_login_failures`)."""

    __tablename__ = "web_login_failures"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_web_login_failures"),
        Index("ix_web_login_failures_key", "key_hash", "at"),
    )

    id: int = Field(sa_type=Integer, primary_key=True)
    key_hash: str = Field(sa_type=String(64))
    at: datetime = Field(sa_type=DateTime(timezone=True))


web_users = table_of(WebUserTable)
web_sessions = table_of(WebSessionTable)
web_login_failures = table_of(WebLoginFailureTable)


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
        required_aware(m["created"]),
        aware(m["last_login"]),
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
    if m is None or required_aware(m["expires_at"]) <= now:
        return None
    return SessionRow(
        m["id_hash"],
        m["user_id"],
        m["tenant"],
        dict(m["oauth_pending"]),
        required_aware(m["created"]),
        required_aware(m["expires_at"]),
    )


def set_oauth_pending(conn: Connection, id_hash: str, pending: dict[str, str]) -> None:
    """Replace the session's in-flight OAuth authorizations ({state hash: provider})."""
    conn.execute(update(web_sessions).where(web_sessions.c.id_hash == id_hash).values(oauth_pending=pending))


def delete_session(conn: Connection, id_hash: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == id_hash))


def delete_tenant_users(conn: Connection, tenant: str) -> dict[str, int]:
    """Delete every web user of ``tenant`` and every session of the tenant (offboarding); counts."""
    sessions = conn.execute(delete(web_sessions).where(web_sessions.c.tenant == tenant)).rowcount
    users = conn.execute(delete(web_users).where(web_users.c.tenant == tenant)).rowcount
    return {"web_sessions": int(sessions), "web_users": int(users)}


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
