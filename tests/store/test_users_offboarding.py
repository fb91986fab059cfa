"""``store.users.delete_tenant_users``: offboarding deletes one tenant's web users and sessions, and
nothing of another tenant's (on the database of ``db_engine``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from store import tenants, users


def test_only_that_tenants_users_and_sessions_are_deleted(db_engine) -> None:
    now = datetime.now(UTC)
    with db_engine.begin() as conn:
        for tenant in ("leaving", "staying"):
            tenants.create_tenant(
                conn, id=tenant, name=tenant, home_region="eu", authorised_subprocessors=[], now=now
            )
            for n in range(2):
                uid = f"{tenant}-{n}"
                users.create_user(
                    conn, id=uid, tenant=tenant, email_hash=uid, email_sealed=b"x", password_hash="h", now=now
                )
                users.create_session(
                    conn,
                    id_hash=f"s-{uid}",
                    user_id=uid,
                    tenant=tenant,
                    now=now,
                    expires_at=now + timedelta(hours=1),
                )
        assert users.delete_tenant_users(conn, "leaving") == {"web_sessions": 2, "web_users": 2}
        assert users.delete_tenant_users(conn, "leaving") == {"web_sessions": 0, "web_users": 0}
        left = conn.execute(
            select(users.web_users.c.tenant, func.count()).group_by(users.web_users.c.tenant)
        ).all()
        assert [tuple(r) for r in left] == [("staying", 2)]
        assert users.get_live_session(conn, "s-leaving-0", now=now) is None
        assert users.get_live_session(conn, "s-staying-0", now=now) is not None
