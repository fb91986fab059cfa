"""The login rate limit's counters: table ``web_login_attempts`` (migration ``0010_web_accounts``).

One row per limit key — a keyed HMAC (server secret) of what is counted: an account at a client
address, an account, a client address; never the email or the address itself::

    web_login_attempts  key_hash → window_start, attempts

:func:`take_attempt` counts an attempt and returns the count in **one statement** (``INSERT … ON
CONFLICT DO UPDATE … RETURNING``, on SQLite and PostgreSQL alike): the database serialises
concurrent attempts on the row, so N parallel attempts at one key see the counts 1…N, each once, and
exactly ``limit`` of them are allowed — no check-then-record race. A window starts at a key's first
attempt and lasts ``window``; an attempt after it starts the count again.

Rows are bounded: :func:`prune` deletes rows whose window has passed (in batches, never waiting on
a row another login holds), and callers check the per-address key first, so one anonymous client
makes at most ``2 * per_address_limit + 1`` rows per window. Every function
takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, PrimaryKeyConstraint, String, case, delete, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import dialect_insert, table_of

__all__ = [
    "PRUNE_BATCH",
    "WebLoginAttemptTable",
    "clear",
    "count_rows",
    "prune",
    "refund",
    "take_attempt",
    "web_login_attempts",
]


class WebLoginAttemptTable(SQLModel, table=True):
    """Declaration of the ``web_login_attempts`` table (read and written through
    :data:`web_login_attempts`)."""

    __tablename__ = "web_login_attempts"
    __table_args__ = (
        PrimaryKeyConstraint("key_hash", name="pk_web_login_attempts"),
        Index("ix_web_login_attempts_window", "window_start"),
    )

    key_hash: str = Field(sa_type=String(64), primary_key=True)
    window_start: datetime = Field(sa_type=DateTime(timezone=True))
    attempts: int = Field(sa_type=Integer)


web_login_attempts = table_of(WebLoginAttemptTable)

PRUNE_BATCH = 1000
"""Expired rows one :func:`prune` deletes at most (bounds the work one login does; each login adds at
most 3 rows, so pruning keeps up)."""


def take_attempt(conn: Connection, key_hash: str, *, now: datetime, since: datetime) -> int:
    """Count one attempt at ``key_hash`` and return the key's attempts in its window, this one
    included (1 for a new key or one whose window started before ``since``). Atomic: one statement."""
    t = web_login_attempts
    expired = t.c.window_start < since
    insert = dialect_insert(conn, t).values(key_hash=key_hash, window_start=now, attempts=1)
    stmt = insert.on_conflict_do_update(
        index_elements=[t.c.key_hash],
        set_={
            "attempts": case((expired, 1), else_=t.c.attempts + 1),
            "window_start": case((expired, now), else_=t.c.window_start),
        },
    ).returning(t.c.attempts)
    return int(conn.execute(stmt).scalar_one())


def refund(conn: Connection, key_hash: str) -> None:
    """Take back one attempt of the key (a login that succeeded, or one refused before its password
    was checked, does not count against the client)."""
    t = web_login_attempts
    conn.execute(
        t.update().where(t.c.key_hash == key_hash, t.c.attempts > 0).values(attempts=t.c.attempts - 1)
    )


def clear(conn: Connection, *key_hashes: str) -> None:
    """Forget the keys (after a successful login, for the account's own keys)."""
    conn.execute(delete(web_login_attempts).where(web_login_attempts.c.key_hash.in_(key_hashes)))


def prune(conn: Connection, *, since: datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` rows whose window started before ``since``; returns how many. On
    PostgreSQL rows another transaction holds are skipped (``FOR UPDATE SKIP LOCKED``), so a prune
    never waits on a login — run it in a transaction of its own, and it can never be part of a
    deadlock."""
    t = web_login_attempts
    expired = select(t.c.key_hash).where(t.c.window_start < since).limit(limit)
    if conn.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    result = conn.execute(delete(t).where(t.c.key_hash.in_(expired.scalar_subquery())))
    return int(result.rowcount or 0)


def count_rows(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(web_login_attempts)).scalar_one())
