"""Sessions are re-checked on every request (issue 16, finding 4b): a live session cookie stops
working the moment its user is gone (offboarding deletes them), without waiting for it to expire."""

from __future__ import annotations

import httpx
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from store import users as user_store
from tests.api.web.conftest import login, page_csrf


async def test_a_session_of_a_deleted_user_is_refused_at_once(
    client: httpx.AsyncClient, tenant_user: tuple[str, str], db_engine: Engine
) -> None:
    tenant, email = tenant_user
    assert (await login(client, tenant, email)).status_code == 303
    csrf = await page_csrf(client, "/syncs")
    with db_engine.begin() as conn:  # the user goes; the session row is left behind on purpose
        conn.execute(delete(user_store.web_users).where(user_store.web_users.c.tenant == tenant))
    page = await client.get("/syncs")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    posted = await client.post("/syncs", data={"csrf_token": csrf, "name": "x"})
    assert posted.status_code in (303, 403)
    assert posted.headers.get("location", "/login") == "/login"
