"""Login, sessions, logout, the login rate limit, CSRF on every form, security headers, ops endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Engine

from api.web.security import CSP, hash_password, verify_password
from store import users as user_store
from tests.api.web.conftest import PASSWORD, AppFactory, app_routes, asgi_client, login, page_csrf


def test_password_hash_roundtrip_and_salted() -> None:
    a, b = hash_password("s3cret-passphrase"), hash_password("s3cret-passphrase")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("s3cret-passphrase", a)
    assert not verify_password("s3cret-passphrasf", a)
    assert not verify_password("s3cret-passphrase", "garbage")


async def test_login_sets_a_safe_cookie_and_logout_ends_the_session(
    client: httpx.AsyncClient, tenant_user: tuple[str, str], db_engine: Engine
) -> None:
    assert (await client.get("/")).headers["location"] == "/login"
    r = await login(client, *tenant_user)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("crmhub_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    home = await client.get("/")
    assert home.status_code == 200
    assert "Acme GmbH" in home.text and "ana@acme.example" in home.text
    # nothing about the login is stored in plaintext
    with db_engine.connect() as conn:
        rows = [dict(m) for m in conn.execute(select(user_store.web_users)).mappings()]
        sessions = [dict(m) for m in conn.execute(select(user_store.web_sessions)).mappings()]
    assert len(rows) == 1 and len(sessions) == 1
    dumped = repr(rows) + repr(sessions)
    assert "ana@acme.example" not in dumped and PASSWORD not in dumped
    assert client.cookies["crmhub_session"] not in dumped
    r = await client.post("/logout", data={"csrf_token": await page_csrf(client)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    with db_engine.connect() as conn:
        assert conn.execute(select(user_store.web_sessions)).first() is None
    client.cookies.clear()
    assert (await client.get("/")).status_code == 303


async def test_cookie_is_secure_over_https(app: FastAPI, tenant_user: tuple[str, str]) -> None:
    async with asgi_client(app, "https://crmhub.example") as c:
        r = await login(c, *tenant_user)
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("crmhub_session=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie


async def test_wrong_password_then_rate_limited_per_user_and_ip(
    client: httpx.AsyncClient, tenant_user: tuple[str, str], app: FastAPI
) -> None:
    tenant, email = tenant_user
    for _ in range(5):
        r = await login(client, tenant, email, "wrong password!!")
        assert r.status_code == 401
        assert "wrong" in r.text
    r = await login(client, tenant, email)  # the right password, but the limit is reached
    assert r.status_code == 429
    assert "crmhub_session" not in client.cookies
    # another user of the same IP, and the same user from another IP, are not limited
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 1234)), base_url="http://testserver"
    )
    async with other:
        assert (await login(other, tenant, email)).status_code == 303
    unknown = await login(client, tenant, "nobody@acme.example", PASSWORD)
    assert unknown.status_code == 401
    metrics = (await client.get("/metrics")).text
    assert 'crmhub_web_logins_total{outcome="failed"} 6.0' in metrics
    assert 'crmhub_web_logins_total{outcome="rate_limited"} 1.0' in metrics
    assert 'crmhub_web_logins_total{outcome="ok"} 1.0' in metrics


def _post_routes(app: FastAPI) -> list[str]:
    return [path for path, methods in app_routes(app) if "POST" in methods]


def _fill(path: str) -> str:
    return path.replace("{provider}", "salesforce").replace("{sync_id}", "contacts")


async def test_every_form_needs_its_csrf_token(
    client: httpx.AsyncClient, app: FastAPI, tenant_user: tuple[str, str]
) -> None:
    posts = _post_routes(app)
    assert {"/login", "/logout", "/syncs", "/instructions/save"} <= set(posts)
    # before login: the login form's double-submit token
    page = await client.get("/login")
    assert (
        await client.post("/login", data={"organisation": "acme", "email": "a@b.c", "password": "x"})
    ).status_code == 403
    client.cookies.clear()
    assert page.status_code == 200
    assert (await login(client, *tenant_user)).status_code == 303
    for path in posts:
        for data in ({}, {"csrf_token": "forged"}):
            r = await client.post(_fill(path), data=data)
            assert r.status_code == 403, (path, r.status_code)
    # the logged-in token of one session does not work for another session
    token = await page_csrf(client)
    async with asgi_client(app) as other:
        await login(other, *tenant_user)
        r = await other.post("/logout", data={"csrf_token": token})
        assert r.status_code == 403


async def test_security_headers_on_pages(client: httpx.AsyncClient, tenant_user: tuple[str, str]) -> None:
    await login(client, *tenant_user)
    for path in ("/login", "/", "/connections", "/does-not-exist"):
        r = await client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in r.text


async def test_healthz_readyz_metrics(
    app_factory: AppFactory, client: httpx.AsyncClient, temporal_env: Any
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "checks": {"database": True, "migrations": True, "temporal": False}}

    async def temporal() -> Any:
        return temporal_env.client

    async with asgi_client(app_factory(temporal=temporal)) as ready:
        r = await ready.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        text = (await ready.get("/metrics")).text
    assert "# TYPE crmhub_web_responses_total counter" in text
    assert 'crmhub_web_responses_total{status_class="2xx"} 1.0' in text
    assert "crmhub_web_oauth_connects" in text


@pytest.mark.parametrize("path", ["/", "/connections", "/syncs", "/syncs/new", "/instructions"])
async def test_pages_need_login(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_auditor_api_is_mounted_with_its_own_auth(
    client: httpx.AsyncClient, tenant_user: tuple[str, str]
) -> None:
    await login(client, *tenant_user)  # a customer session is not an auditor token
    r = await client.get("/audit/whoami")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/json"
    spec = (await client.get("/openapi.json")).json()
    assert "/audit/lineage" in spec["paths"] and "/syncs/{sync_id}/run" in spec["paths"]


def test_cli_web_user_add(web_settings: Any, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli
    from tests.api.web.conftest import make_tenant

    make_tenant(db_engine, "acme")
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(web_settings.data_dir))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", web_settings.database_url)
    monkeypatch.setenv("CRMHUB_WEB_PASSWORD", PASSWORD)
    runner = CliRunner()
    ok = runner.invoke(cli, ["web", "user", "add", "--tenant", "acme", "--email", "Bo@Acme.example"])
    assert ok.exit_code == 0, ok.output
    assert "web user created for tenant acme" in ok.output and PASSWORD not in ok.output
    again = runner.invoke(cli, ["web", "user", "add", "--tenant", "acme", "--email", "bo@acme.example"])
    assert again.exit_code != 0 and "already has a user" in str(again.exception)
    missing = runner.invoke(cli, ["web", "user", "add", "--tenant", "nope", "--email", "x@y.example"])
    assert "no tenant 'nope'" in str(missing.exception)
    monkeypatch.setenv("CRMHUB_WEB_PASSWORD", "short")
    weak = runner.invoke(cli, ["web", "user", "add", "--tenant", "acme", "--email", "c@acme.example"])
    assert "at least 12 characters" in str(weak.exception)
    with db_engine.connect() as conn:
        assert len(conn.execute(select(user_store.web_users)).all()) == 1


async def test_nul_bytes_are_refused_before_any_store_sees_them(
    client: httpx.AsyncClient, tenant_user: tuple[str, str]
) -> None:
    # PostgreSQL refuses NUL in text: without this, /syncs/%00 or ?from=%00 would be a 500
    await login(client, *tenant_user)
    for url in ("/syncs/a%00b", "/audit/subprocessors?from=%00", "/instructions/edit?connection_id=%00"):
        r = await client.get(url)
        assert r.status_code == 400, url
    token = await page_csrf(client)
    r = await client.post("/syncs/contacts/run", data={"csrf_token": token, "mode": "full\x00"})
    assert r.status_code in (400, 422)
    r = await client.post(
        "/instructions/save",
        data={
            "csrf_token": token,
            "connection_id": "\x00",
            "stream": "C",
            "purpose": "p",
            "retention_days": "1",
            "permitted_regions": "eea",
        },
    )
    assert r.status_code == 400 and "NUL" in r.text
