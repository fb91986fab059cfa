"""Web app users, server-side sessions and failed logins: tables and the small functions on them.

Tables (migrations ``0007_users``, ``0010_web_accounts``, ``0017_roles_suppression``)::

    web_users           id → tenant, email_hash (the tenant's keyed hash of the lower-cased email,
                        for lookup), email_sealed (vault ciphertext, for display), password_hash
                        (scrypt, see :mod:`api.web.security`), created, last_login, disabled_at,
                        role (:data:`ROLES`: admin · editor · viewer; users before 0017 are admins)
    web_sessions        id_hash (SHA-256 of the session cookie) → user, tenant, expiry, and the OAuth
                        authorizations it started ({SHA-256 of state: provider})

A session is live only while it has not expired, its user exists and is not disabled, and its tenant
exists (:func:`get_live_session`, asked on every request): disabling or removing a user, or
offboarding its tenant, ends its sessions at once. The login rate limit's counters are in
:mod:`store.login_limits`.

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
from store.tenants import tenants

__all__ = [
    "ROLES",
    "SessionRow",
    "UserRow",
    "WebSessionTable",
    "WebUserTable",
    "count_sessions",
    "create_session",
    "create_user",
    "delete_session",
    "delete_tenant_users",
    "delete_user",
    "end_sessions",
    "find_user",
    "get_live_session",
    "get_user",
    "list_users",
    "set_disabled",
    "set_last_login",
    "set_oauth_pending",
    "set_password_hash",
    "set_role",
    "web_sessions",
    "web_users",
]


ROLES = ("admin", "editor", "viewer")
"""A web user's role in its tenant: ``admin`` changes instructions, connections, users and
notification settings; ``editor`` creates and runs syncs; ``viewer`` only reads."""


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
    disabled_at: datetime | None = Field(sa_type=DateTime(timezone=True))
    role: str = Field(sa_type=String(16), sa_column_kwargs={"server_default": "admin"})


class WebSessionTable(SQLModel, table=True):
    """Declaration of the ``web_sessions`` table (read and written through :data:`web_sessions`)."""

    __tablename__ = "web_sessions"
    __table_args__ = (
        PrimaryKeyConstraint("id_hash", name="pk_web_sessions"),
        Index("ix_web_sessions_expires", "expires_at"),
        Index("ix_web_sessions_user", "user_id"),
    )

    id_hash: str = Field(sa_type=String(64), primary_key=True)
    user_id: str = Field(sa_type=String(36))
    tenant: str = Field(sa_type=String(128))
    oauth_pending: dict[str, str] = Field(sa_type=JSON)
    created: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))


web_users = table_of(WebUserTable)
web_sessions = table_of(WebSessionTable)


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
    disabled_at: datetime | None = None
    role: str = "admin"

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


def _user(m: Any) -> UserRow:
    return UserRow(
        m["id"],
        m["tenant"],
        m["email_hash"],
        bytes(m["email_sealed"]),
        m["password_hash"],
        required_aware(m["created"]),
        aware(m["last_login"]),
        aware(m["disabled_at"]),
        m["role"],
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
    role: str = "admin",
) -> UserRow:
    """Insert a user; the same email twice in one tenant, or a role not in :data:`ROLES`, is a
    :class:`ConfigError`."""
    _check_role(role)
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
            disabled_at=None,
            role=role,
        )
    )
    return UserRow(id, tenant, email_hash, email_sealed, password_hash, now, None, role=role)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}: pass --role admin|editor|viewer")


def set_role(conn: Connection, id: str, role: str) -> bool:
    """Change a user's role (their sessions see it on the next request); False if no such user."""
    _check_role(role)
    return bool(conn.execute(update(web_users).where(web_users.c.id == id).values(role=role)).rowcount)


def find_user(conn: Connection, tenant: str, email_hash: str) -> UserRow | None:
    stmt = select(web_users).where(web_users.c.tenant == tenant, web_users.c.email_hash == email_hash)
    m = conn.execute(stmt).mappings().one_or_none()
    return None if m is None else _user(m)


def get_user(conn: Connection, id: str) -> UserRow | None:
    m = conn.execute(select(web_users).where(web_users.c.id == id)).mappings().one_or_none()
    return None if m is None else _user(m)


def list_users(conn: Connection, tenant: str) -> list[UserRow]:
    """The tenant's users, oldest first."""
    stmt = select(web_users).where(web_users.c.tenant == tenant).order_by(web_users.c.created, web_users.c.id)
    return [_user(m) for m in conn.execute(stmt).mappings()]


def set_last_login(conn: Connection, id: str, *, now: datetime) -> None:
    conn.execute(update(web_users).where(web_users.c.id == id).values(last_login=now))


def set_disabled(conn: Connection, id: str, *, at: datetime | None) -> bool:
    """Disable the user (``at``: when) and end its sessions, or enable it (``at=None``); False when
    there is no such user."""
    done = conn.execute(update(web_users).where(web_users.c.id == id).values(disabled_at=at)).rowcount
    if at is not None:
        end_sessions(conn, id)
    return bool(done)


def set_password_hash(conn: Connection, id: str, password_hash: str) -> bool:
    """Replace the user's password hash; False when there is no such user. Ending its other sessions
    is the caller's choice (:func:`end_sessions`)."""
    stmt = update(web_users).where(web_users.c.id == id).values(password_hash=password_hash)
    return bool(conn.execute(stmt).rowcount)


def delete_user(conn: Connection, id: str) -> bool:
    """Delete the user and its sessions; False when there is no such user."""
    end_sessions(conn, id)
    return bool(conn.execute(delete(web_users).where(web_users.c.id == id)).rowcount)


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
    role: str = "admin"  # the user's role as of this read (get_live_session)


def create_session(
    conn: Connection,
    *,
    id_hash: str,
    user_id: str,
    tenant: str,
    now: datetime,
    expires_at: datetime,
    keep_per_user: int | None = None,
) -> None:
    """Record a new session and drop sessions that expired; with ``keep_per_user``, also the user's
    oldest sessions beyond that many (this one included)."""
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
    if keep_per_user is not None:
        t = web_sessions
        newest = (
            select(t.c.id_hash)
            .where(t.c.user_id == user_id)
            .order_by(t.c.created.desc(), t.c.id_hash)
            .limit(keep_per_user)
        )
        conn.execute(delete(t).where(t.c.user_id == user_id, t.c.id_hash.not_in(newest.scalar_subquery())))


def _session(m: Any) -> SessionRow:
    return SessionRow(
        m["id_hash"],
        m["user_id"],
        m["tenant"],
        dict(m["oauth_pending"]),
        required_aware(m["created"]),
        required_aware(m["expires_at"]),
        m.get("role", "admin"),
    )


def get_live_session(conn: Connection, id_hash: str, *, now: datetime) -> SessionRow | None:
    """The session with this hash if it has not expired, its user exists in its tenant and is not
    disabled, and the tenant exists — one query, asked on every request."""
    s, u = web_sessions, web_users
    stmt = (
        select(s, u.c.role)
        .join(u, (u.c.id == s.c.user_id) & (u.c.tenant == s.c.tenant))
        .join(tenants, tenants.c.id == s.c.tenant)
        .where(s.c.id_hash == id_hash, s.c.expires_at > now, u.c.disabled_at.is_(None))
    )
    m = conn.execute(stmt).mappings().one_or_none()
    return None if m is None else _session(m)


def count_sessions(conn: Connection, user_id: str, *, now: datetime) -> int:
    """The user's unexpired sessions."""
    t = web_sessions
    stmt = select(func.count()).where(t.c.user_id == user_id, t.c.expires_at > now)
    return int(conn.execute(stmt).scalar_one())


def end_sessions(conn: Connection, user_id: str, *, keep: str | None = None) -> int:
    """Delete the user's sessions (but the one whose hash is ``keep``); returns how many."""
    t = web_sessions
    stmt = delete(t).where(t.c.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(t.c.id_hash != keep)
    return int(conn.execute(stmt).rowcount or 0)


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
