"""store.users (sessions that end with their user or tenant, the per-user cap) and store.login_limits
(the atomic counter), on the database under test."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine

from store import login_limits
from store import tenants as tenant_store
from store import users as user_store

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _tenant_and_user(engine: Engine, tenant: str = "acme", user_id: str = "u1") -> None:
    with engine.begin() as conn:
        if tenant_store.get_tenant(conn, tenant) is None:
            tenant_store.create_tenant(
                conn, id=tenant, name=tenant, home_region="eea", authorised_subprocessors=[], now=NOW
            )
        user_store.create_user(
            conn,
            id=user_id,
            tenant=tenant,
            email_hash=f"kh_{user_id}",
            email_sealed=b"sealed",
            password_hash="scrypt$x",
            now=NOW,
        )


def _session(engine: Engine, id_hash: str, user_id: str = "u1", tenant: str = "acme") -> None:
    with engine.begin() as conn:
        user_store.create_session(
            conn, id_hash=id_hash, user_id=user_id, tenant=tenant, now=NOW, expires_at=NOW + HOUR
        )


def _live(engine: Engine, id_hash: str, now: datetime = NOW) -> bool:
    with engine.connect() as conn:
        return user_store.get_live_session(conn, id_hash, now=now) is not None


def test_a_session_lives_while_it_is_unexpired_and_its_user_and_tenant_are_there(db_engine: Engine) -> None:
    _tenant_and_user(db_engine)
    _session(db_engine, "s1")
    assert _live(db_engine, "s1") and not _live(db_engine, "s1", NOW + 2 * HOUR)
    with db_engine.begin() as conn:
        assert user_store.set_disabled(conn, "u1", at=NOW)
    assert not _live(db_engine, "s1")  # ended with the user's disabling
    with db_engine.begin() as conn:
        assert user_store.set_disabled(conn, "u1", at=None)
        assert not user_store.set_disabled(conn, "nobody", at=NOW)
    _session(db_engine, "s2")
    with db_engine.begin() as conn:  # the disabled flag alone refuses it, rows left in place
        conn.execute(user_store.web_users.update().values(disabled_at=NOW))
    assert not _live(db_engine, "s2")
    with db_engine.begin() as conn:
        conn.execute(user_store.web_users.update().values(disabled_at=None))
    assert _live(db_engine, "s2")
    with db_engine.begin() as conn:  # a session naming another (existing) tenant than its user's
        tenant_store.create_tenant(
            conn, id="other", name="other", home_region="eea", authorised_subprocessors=[], now=NOW
        )
        conn.execute(user_store.web_sessions.update().values(tenant="other"))
    assert not _live(db_engine, "s2")
    with db_engine.begin() as conn:
        conn.execute(user_store.web_sessions.update().values(tenant="acme"))
        conn.execute(delete(tenant_store.tenants))
    assert not _live(db_engine, "s2")


def test_removing_a_user_ends_its_sessions_and_only_its(db_engine: Engine) -> None:
    _tenant_and_user(db_engine)
    _tenant_and_user(db_engine, user_id="u2")
    for i in range(3):
        _session(db_engine, f"a{i}")
    _session(db_engine, "b0", user_id="u2")
    with db_engine.begin() as conn:
        assert user_store.end_sessions(conn, "u1", keep="a1") == 2
        assert user_store.count_sessions(conn, "u1", now=NOW) == 1
        assert user_store.delete_user(conn, "u1") and not user_store.delete_user(conn, "u1")
        assert user_store.count_sessions(conn, "u1", now=NOW) == 0
        assert [u.id for u in user_store.list_users(conn, "acme")] == ["u2"]
        assert user_store.set_password_hash(conn, "u2", "scrypt$y")
        changed = user_store.get_user(conn, "u2")
        assert changed is not None and changed.password_hash == "scrypt$y"
    assert _live(db_engine, "b0")


def test_a_user_keeps_its_newest_sessions_up_to_the_cap(db_engine: Engine) -> None:
    _tenant_and_user(db_engine)
    for i in range(7):
        with db_engine.begin() as conn:
            user_store.create_session(
                conn,
                id_hash=f"s{i}",
                user_id="u1",
                tenant="acme",
                now=NOW + timedelta(seconds=i),
                expires_at=NOW + HOUR,
                keep_per_user=3,
            )
    assert [i for i in range(7) if _live(db_engine, f"s{i}", NOW + timedelta(seconds=10))] == [4, 5, 6]


def test_take_attempt_is_atomic_under_concurrency(db_engine: Engine) -> None:
    since = NOW - timedelta(minutes=5)
    barrier = threading.Barrier(16)

    def take(_: int) -> int:
        barrier.wait()
        with db_engine.begin() as conn:
            return login_limits.take_attempt(conn, "k", now=NOW, since=since)

    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = sorted(pool.map(take, range(48)))
    assert counts == list(range(1, 49))  # every count seen exactly once


def test_counts_start_again_after_the_window_and_are_pruned(db_engine: Engine) -> None:
    window = timedelta(minutes=5)
    with db_engine.begin() as conn:
        assert [login_limits.take_attempt(conn, "k", now=NOW, since=NOW - window) for _ in range(3)] == [
            1,
            2,
            3,
        ]
        login_limits.refund(conn, "k")
        assert login_limits.take_attempt(conn, "k", now=NOW, since=NOW - window) == 3
        later = NOW + window + timedelta(seconds=1)
        assert login_limits.take_attempt(conn, "k", now=later, since=later - window) == 1  # a new window
        login_limits.take_attempt(conn, "old", now=NOW, since=NOW - window)
        assert login_limits.prune(conn, since=later - window) == 1  # "old"; "k" restarted at later
        assert login_limits.count_rows(conn) == 1
        login_limits.clear(conn, "k")
        assert login_limits.count_rows(conn) == 0
