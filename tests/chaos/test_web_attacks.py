"""Attacks on the web app's logins, sessions and request handling (issue 16, findings 5 and 6 and the
security review): through a real uvicorn server on loopback configured as ``crmhub web`` runs it
(:func:`api.cli_web.server_config`), or in-process (ASGI) where a test needs many client addresses.

* 50 parallel wrong passwords at one account from one client → exactly 5 reach the password check
  (401), 45 are 429; then the right password is 429 too. 30 parallel from 30 addresses → exactly 20
  (the per-account limit). On SQLite and PostgreSQL (``db_url``).
* ``X-Forwarded-For`` from loopback is not believed unless loopback is a configured trusted proxy.
* An anonymous client spraying 120 made-up accounts makes at most 101 rate-limit rows, keyed by
  HMAC (no row is the plain SHA-256 of what it counts).
* 40 parallel logins compute at most ``web.password_hash_slots`` (2) scrypt hashes at once; the
  rest wait or get 503 with ``Retry-After``; an unknown user costs one hash like a known one.
* A disabled, removed or password-changed user's sessions, and the sessions of a deleted tenant, are
  refused at the next request; a user keeps at most ``web.sessions_per_user`` sessions.
* CSP ``form-action 'self'`` (the connections page: plus the providers' origins), HSTS on https,
  ``/metrics`` closed off loopback and behind its token, 413 / 408 for big and slow bodies, 422s
  that never echo a submitted value.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import Engine

from api.cli_web import add_user, server_config
from api.web import create_app
from schemas.settings import Settings, load_settings
from store import tenants as tenant_store
from store import users as user_store
from tests.api.web.conftest import PASSWORD, asgi_client, csrf_of, login, make_tenant, no_temporal, page_csrf
from tests.ports import free_port

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TENANT, EMAIL = "acme", "ana@acme.example"
WRONG = "not the password at all"


def _settings(tmp_path: Path, db_url: str, **web: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", database_url=db_url, **({"web": web} if web else {}))


@pytest.fixture
def seeded(tmp_path: Path, db_url: str, db_engine: Engine) -> Settings:
    """Tenant acme with its user ana, default settings."""
    settings = _settings(tmp_path, db_url)
    make_tenant(db_engine, TENANT, "Acme GmbH")
    add_user(settings, TENANT, EMAIL, PASSWORD)
    return settings


@pytest.fixture
def apps(db_engine: Engine) -> Iterator[list[FastAPI]]:
    made: list[FastAPI] = []
    yield made
    for app in made:
        app.state.web.close()


def _app(apps: list[FastAPI], settings: Settings, engine: Engine, **kw: Any) -> FastAPI:
    kw.setdefault("oauth_configs", [])
    app = create_app(settings, engine=engine, temporal=no_temporal, **kw)
    apps.append(app)
    return app


@contextmanager
def served(app: FastAPI, settings: Settings) -> Iterator[str]:
    """The app behind a real uvicorn server on a loopback port, configured as ``crmhub web`` does."""
    port = free_port()
    server = uvicorn.Server(server_config(settings, app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _from(app: FastAPI, address: str, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """An in-process client whose requests come from ``address``."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url=base_url
    )


async def _login_form(client: httpx.AsyncClient) -> str:
    """The login page's CSRF token (its double-submit cookie is now in ``client``)."""
    page = await client.get("/login")
    assert page.status_code == 200
    return csrf_of(page.text)


async def _attempt(
    client: httpx.AsyncClient,
    csrf: str,
    password: str = WRONG,
    email: str = EMAIL,
    headers: dict[str, str] | None = None,
) -> int:
    data = {"csrf_token": csrf, "organisation": TENANT, "email": email, "password": password}
    return (await client.post("/login", data=data, headers=headers)).status_code


def _login_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every row of the login rate limit's tables (whatever they are called)."""
    names = [n for n in inspect(engine).get_table_names() if n.startswith("web_login")]
    from sqlalchemy import MetaData

    md = MetaData()
    md.reflect(engine, only=names)
    with engine.connect() as conn:
        return [dict(m) for t in md.sorted_tables for m in conn.execute(select(t)).mappings()]


# ---- finding 5: the login rate limit -------------------------------------------------------------


async def test_fifty_parallel_wrong_passwords_reach_the_password_check_exactly_five_times(
    tmp_path: Path, db_url: str, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    patient = _settings(tmp_path, db_url, password_hash_wait_s=30)  # no 503: every hash waits its turn
    app = _app(apps, patient, db_engine)
    with served(app, patient) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            csrf = await _login_form(c)
            codes = await asyncio.gather(*(_attempt(c, csrf) for _ in range(50)))
            assert sorted(codes).count(401) == 5, sorted(codes)
            assert codes.count(429) == 45, sorted(codes)
            assert await _attempt(c, csrf, PASSWORD) == 429  # the right password, over the limit


async def test_thirty_parallel_attempts_from_thirty_addresses_meet_the_per_account_limit(
    tmp_path: Path, db_url: str, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    app = _app(apps, _settings(tmp_path, db_url, password_hash_wait_s=30), db_engine)

    async def one(i: int) -> int:
        async with _from(app, f"198.51.100.{i + 1}") as c:
            return await _attempt(c, await _login_form(c))

    codes = await asyncio.gather(*(one(i) for i in range(30)))
    assert codes.count(401) == 20 and codes.count(429) == 10, sorted(codes)
    async with _from(app, "198.51.100.200") as c:
        assert await _attempt(c, await _login_form(c), PASSWORD) == 429


async def test_forwarded_for_from_loopback_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, db_url: str, db_engine: Engine, seeded: Settings, apps: list[FastAPI]
) -> None:
    untrusting = _app(apps, seeded, db_engine)
    with served(untrusting, seeded) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            csrf = await _login_form(c)
            codes = [
                await _attempt(c, csrf, headers={"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(1, 9)
            ]
    assert codes == [401] * 5 + [429] * 3, codes
    with db_engine.begin() as conn:  # a fresh window for the next server
        conn.execute(delete(user_store.web_sessions))
        for name in inspect(db_engine).get_table_names():
            if name.startswith("web_login"):
                conn.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608 - table names from the schema
    behind_proxy = _settings(tmp_path, db_url, trusted_proxies=["127.0.0.1"])
    trusting = _app(apps, behind_proxy, db_engine)
    with served(trusting, behind_proxy) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            csrf = await _login_form(c)
            one = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
            assert [await _attempt(c, csrf, headers=one) for _ in range(6)] == [401] * 5 + [429]
            # another client behind the proxy is another client; the proxy said https: HSTS
            other = {"X-Forwarded-For": "203.0.113.8", "X-Forwarded-Proto": "https"}
            r = await c.post(
                "/login",
                data={"csrf_token": csrf, "organisation": TENANT, "email": EMAIL, "password": PASSWORD},
                headers=other,
            )
    assert r.status_code == 303, r.text
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert "Secure" in r.headers["set-cookie"]


async def test_a_spray_of_made_up_accounts_makes_a_bounded_number_of_keyed_rows(
    seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    app = _app(apps, seeded, db_engine)
    async with _from(app, "192.0.2.44") as c:
        csrf = await _login_form(c)
        codes = [await _attempt(c, csrf, email=f"guess{i}@acme.example") for i in range(120)]
    assert codes == [401] * 50 + [429] * 70, codes
    rows = _login_rows(db_engine)
    assert len(rows) <= 1 + 2 * 50, len(rows)  # the address, and per account: its client and itself
    plain = {
        hashlib.sha256(f"{TENANT}\x00guess{i}@acme.example\x00192.0.2.44".encode()).hexdigest()
        for i in range(120)
    }
    stored = {str(v) for row in rows for v in row.values()}
    assert not stored & plain, "a rate-limit key is an unsalted hash of what it counts"
    assert not any("192.0.2.44" in v or "@acme.example" in v for v in stored)


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts hashlib.scrypt calls and the most running at once."""
    real = hashlib.scrypt
    seen = {"calls": 0, "running": 0, "peak": 0}
    lock = threading.Lock()

    def counted(*args: Any, **kw: Any) -> bytes:
        with lock:
            seen["calls"] += 1
            seen["running"] += 1
            seen["peak"] = max(seen["peak"], seen["running"])
        try:
            time.sleep(0.02)  # widen the window, so overlapping hashes overlap visibly
            return real(*args, **kw)
        finally:
            with lock:
                seen["running"] -= 1

    monkeypatch.setattr(hashlib, "scrypt", counted)
    return seen


async def test_parallel_logins_hash_within_the_slots_and_unknown_users_cost_one_hash(
    seeded: Settings, db_engine: Engine, apps: list[FastAPI], scrypt_calls: dict[str, int]
) -> None:
    app = _app(apps, seeded, db_engine)

    async def one(i: int) -> httpx.Response:
        async with _from(app, f"198.51.100.{i + 1}") as c:
            data = {
                "csrf_token": await _login_form(c),
                "organisation": TENANT,
                "email": f"user{i}@acme.example",
                "password": WRONG,
            }
            return await c.post("/login", data=data)

    responses = await asyncio.gather(*(one(i) for i in range(40)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {401, 503}, codes
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
    assert scrypt_calls["peak"] <= seeded.web.password_hash_slots, scrypt_calls
    assert scrypt_calls["calls"] == codes.count(401)
    # one hash each: a known user's wrong password, an unknown email, an unknown organisation
    async with _from(app, "192.0.2.99") as c:
        csrf = await _login_form(c)
        for email, org in ((EMAIL, TENANT), ("nobody@acme.example", TENANT), (EMAIL, "no-such-org")):
            before = scrypt_calls["calls"]
            data = {"csrf_token": csrf, "organisation": org, "email": email, "password": WRONG}
            r = await c.post("/login", data=data)
            assert r.status_code == 401 and "Organisation, email or password is wrong." in r.text
            assert scrypt_calls["calls"] == before + 1, (email, org)


# ---- finding 6: users that go away take their sessions with them ---------------------------------


@pytest.fixture
async def browser(
    seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(_app(apps, seeded, db_engine)) as c:
        assert (await login(c, TENANT, EMAIL)).status_code == 303
        assert (await c.get("/")).status_code == 200
        yield c


def _user_id(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(user_store.web_users.c.id)).scalar_one())


async def test_a_disabled_users_live_session_is_refused_at_the_next_request(
    browser: httpx.AsyncClient, db_engine: Engine
) -> None:
    with db_engine.begin() as conn:  # the column alone, sessions left in place: the per-request check
        conn.execute(update(user_store.web_users).values(disabled_at=datetime.now(UTC)))
    r = await browser.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert (await login(browser, TENANT, EMAIL)).status_code == 401  # and no new login


async def test_a_removed_user_or_a_deleted_tenant_ends_the_session(
    browser: httpx.AsyncClient, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    with db_engine.begin() as conn:
        conn.execute(delete(user_store.web_users))
    assert (await browser.get("/connections")).status_code == 303
    make_tenant(db_engine, "gone", "Gone Ltd")
    add_user(seeded, "gone", "gil@gone.example", PASSWORD)
    async with asgi_client(_app(apps, seeded, db_engine)) as c:
        assert (await login(c, "gone", "gil@gone.example")).status_code == 303
        with db_engine.begin() as conn:
            conn.execute(delete(tenant_store.tenants).where(tenant_store.tenants.c.id == "gone"))
        r = await c.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_changing_the_password_ends_the_other_sessions(
    browser: httpx.AsyncClient, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    async with asgi_client(_app(apps, seeded, db_engine)) as other:
        assert (await login(other, TENANT, EMAIL)).status_code == 303
        page = await browser.get("/account/password")
        assert page.status_code == 200 and 'name="new_password"' in page.text
        new = "a brand new passphrase"
        form = {"current_password": PASSWORD, "new_password": new, "confirm_password": new}
        assert (await browser.post("/account/password", data=form)).status_code == 403  # no CSRF
        bad = {**form, "current_password": WRONG, "csrf_token": csrf_of(page.text)}
        assert (await browser.post("/account/password", data=bad)).status_code == 400
        r = await browser.post("/account/password", data={**form, "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        assert (await browser.get("/")).status_code == 200  # this session goes on
        assert (await other.get("/")).status_code == 303  # the other one is over
        other.cookies.clear()
        assert (await login(other, TENANT, EMAIL, PASSWORD)).status_code == 401
        assert (await login(other, TENANT, EMAIL, new)).status_code == 303


async def test_one_user_keeps_a_bounded_number_of_sessions(
    seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    app = _app(apps, seeded, db_engine)
    for _ in range(seeded.web.sessions_per_user + 5):
        async with asgi_client(app) as c:
            assert (await login(c, TENANT, EMAIL)).status_code == 303
    with db_engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(user_store.web_sessions)).scalar_one()
    assert count == seeded.web.sessions_per_user


# ---- headers, /metrics, bodies, 422s --------------------------------------------------------------


async def test_csp_allows_forms_only_to_self_and_hsts_only_on_https(
    browser: httpx.AsyncClient, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    for path in ("/", "/login", "/syncs", "/account/password"):
        r = await browser.get(path)
        csp = r.headers["content-security-policy"]
        assert re.search(r"form-action 'self'(;|$)", csp), (path, csp)
        assert "frame-ancestors 'none'" in csp
        assert "strict-transport-security" not in r.headers  # plain http
    async with asgi_client(_app(apps, seeded, db_engine), "https://crmhub.example") as c:
        r = await c.get("/login")
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_metrics_are_closed_off_loopback_and_behind_their_token(
    tmp_path: Path, db_url: str, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    app = _app(apps, seeded, db_engine)
    async with _from(app, "127.0.0.1") as local, _from(app, "203.0.113.50") as remote:
        assert (await local.get("/metrics")).status_code == 200
        r = await remote.get("/metrics")
        assert r.status_code == 404 and "crmhub_web" not in r.text
    tokened = _app(apps, _settings(tmp_path, db_url, metrics_token="m3trics-t0ken-long-enough"), db_engine)
    async with _from(tokened, "203.0.113.50") as remote, _from(tokened, "127.0.0.1") as local:
        assert (await local.get("/metrics")).status_code == 404  # a token is set: loopback needs it too
        assert (await remote.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 404
        ok = await remote.get("/metrics", headers={"Authorization": "Bearer m3trics-t0ken-long-enough"})
        assert ok.status_code == 200 and "crmhub_web_logins" in ok.text


async def test_big_bodies_are_413_and_slow_bodies_408(
    tmp_path: Path, db_url: str, seeded: Settings, db_engine: Engine, apps: list[FastAPI]
) -> None:
    app = _app(apps, seeded, db_engine)
    async with asgi_client(app) as c:
        csrf = await _login_form(c)
        big = {"csrf_token": csrf, "organisation": TENANT, "email": EMAIL, "password": "x" * 2_000_000}
        assert (await c.post("/login", data=big)).status_code == 413
    quick = _settings(tmp_path, db_url, body_timeout_s=1.0)
    slow_app = _app(apps, quick, db_engine)
    with served(slow_app, quick) as base:
        port = int(base.rsplit(":", 1)[1])
        started = time.monotonic()
        answer = await asyncio.to_thread(_send_half_a_body, port)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < 5, took


def _send_half_a_body(port: int) -> bytes:
    """Announce a 1000-byte form body, send 10 bytes, then wait for the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncsrf_token"
        )
        return s.recv(65536)


async def test_422_answers_never_echo_a_submitted_value(browser: httpx.AsyncClient) -> None:
    secret = "Sup3r-secret-Passw0rd!" * 60  # over the 1024-character limit
    r = await browser.post(
        "/account/password", data={"csrf_token": await page_csrf(browser), "current_password": secret}
    )
    assert r.status_code == 422 and "Sup3r-secret" not in r.text, r.text
    locs = {tuple(p["loc"]) for p in r.json()["detail"]}
    assert ("body", "new_password") in locs and ("body", "current_password") in locs
    browser.cookies.clear()
    csrf = await _login_form(browser)
    r = await browser.post(
        "/login", data={"csrf_token": csrf, "organisation": TENANT, "email": EMAIL, "password": secret}
    )
    assert r.status_code == 422 and "Sup3r-secret" not in r.text, r.text
    assert all(set(p) == {"loc", "msg", "type"} for p in r.json()["detail"])
