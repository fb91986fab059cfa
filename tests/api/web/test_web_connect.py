"""The customer pages against the sandbox CRMs over HTTPS, in-process (ASGI): Connect Salesforce and
HubSpot through the real OAuth flow (the consent button pressed like a browser), bad callbacks → 400,
the re-authorisation badge, the instruction editor against the live describe, creating a sync."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.engine import Engine

from sandbox.consent import press_consent
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings
from schemas.sync import SyncWriteMode
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from tests.api.web.conftest import AppFactory, asgi_client, csrf_of, login, page_csrf
from tests.stack import sandbox_oauth_configs

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1:8000"  # the sandbox registers http://127.0.0.1:8000/oauth/callback


@pytest.fixture
def sandbox(web_settings: Settings) -> Iterator[RunningSandbox]:
    with start_sandbox(web_settings.data_dir, seed_counts={"salesforce": {"Contact": 5}}) as sb:
        yield sb


@pytest.fixture
async def browser(
    app_factory: AppFactory, sandbox: RunningSandbox, tenant_user: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_factory(oauth_configs=sandbox_oauth_configs(sandbox, redirect_uri=f"{BASE}/oauth/callback"))
    async with asgi_client(app, BASE) as c:
        assert (await login(c, *tenant_user)).status_code == 303
        c.app = app  # type: ignore[attr-defined]
        yield c
    app.state.web.close()  # its keep-alive connections to the sandbox end before the sandbox stops


async def connect(
    c: httpx.AsyncClient, sandbox: RunningSandbox, provider: str, *, allow_exports: bool = False
) -> str:
    form = {"csrf_token": await page_csrf(c, "/connections")}
    if allow_exports:
        form["allow_exports"] = "on"
    r = await c.post(f"/connections/connect/{provider}", data=form)
    assert r.status_code == 303
    consent = r.headers["location"]
    asked = parse_qs(urlsplit(consent).query)["scope"][0].split()
    assert ("crm.export" in asked) is (allow_exports and provider == "hubspot")
    assert consent.startswith("https://127.0.0.1:")
    params = press_consent(consent, sandbox.ca.client_context())
    cb = await c.get("/oauth/callback", params=params)
    assert cb.status_code == 303, cb.text
    assert cb.headers["location"].startswith("/connections?connected=")
    return cb.headers["location"].split("=", 1)[1]


async def test_connect_both_crms_and_bad_callbacks(
    browser: httpx.AsyncClient,
    sandbox: RunningSandbox,
    db_engine: Engine,
    tenant_user: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sf = await connect(browser, sandbox, "salesforce")
    hs = await connect(browser, sandbox, "hubspot")
    page = (await browser.get("/connections")).text
    assert sf in page and hs in page and page.count("badge ok") == 2
    with db_engine.connect() as conn:
        rows = {r.id: r for r in connection_store.list_connections(conn, tenant="acme")}
    assert set(rows) == {sf, hs} and all(r.access_token_sealed for r in rows.values())

    # a replayed, unknown or foreign callback renders the 400 page and creates nothing
    r = await browser.post("/connections/connect/salesforce", data={"csrf_token": await page_csrf(browser)})
    params = press_consent(r.headers["location"], sandbox.ca.client_context())
    bad = await browser.get("/oauth/callback", params={"state": "made-up", "code": "x"})
    assert bad.status_code == 400 and "not started in this session" in bad.text
    async with asgi_client(browser.app, BASE) as other:  # type: ignore[attr-defined]
        await login(other, *tenant_user)
        foreign = await other.get("/oauth/callback", params=params)
        assert foreign.status_code == 400
    denied = await browser.post("/connections/connect/hubspot", data={"csrf_token": await page_csrf(browser)})
    refused = press_consent(denied.headers["location"], sandbox.ca.client_context(), allow=False)
    r = await browser.get("/oauth/callback", params=refused)
    assert r.status_code == 400 and "Connection failed" in r.text
    assert (
        await browser.get("/oauth/callback", params=params)
    ).status_code == 303  # the real one still works
    # no code, state, session cookie or email reached a log line of crmhub (httpx/httpcore lines are
    # this test's own clients, which carry the callback URL by design; the app's only HTTP calls are
    # token POSTs, whose secrets are in the body)
    app_logs = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    for secret in (params["code"], params["state"], browser.cookies["crmhub_session"], tenant_user[1]):
        assert secret not in app_logs
    assert "web oauth callback refused" in app_logs  # the logs are there, without the secrets
    app_http = [r.getMessage() for r in caplog.records if r.name == "httpx" and "/token" in r.getMessage()]
    assert app_http and not any(params["code"] in m for m in app_http)
    with db_engine.connect() as conn:
        assert len(connection_store.list_connections(conn, tenant="acme")) == 3
    metrics = (await browser.get("/metrics")).text
    assert 'crmhub_web_oauth_connects_total{outcome="ok",provider="salesforce"} 2.0' in metrics
    assert 'crmhub_web_oauth_connects_total{outcome="access_denied",provider="hubspot"} 1.0' in metrics

    # a dead refresh token shows the badge and a Reconnect button
    with db_engine.begin() as conn:
        connection_store.mark_reauthorization_required(
            conn, hs, "refresh token revoked", now=datetime.now(UTC)
        )
    page = (await browser.get("/connections")).text
    assert "re-authorisation required" in page and "Reconnect" in page
    assert "need re-authorisation" in (await browser.get("/")).text


async def test_the_hubspot_export_checkbox_asks_for_crm_export_and_the_connection_keeps_it(
    browser: httpx.AsyncClient, sandbox: RunningSandbox, db_engine: Engine
) -> None:
    page = (await browser.get("/connections")).text
    assert 'name="allow_exports"' in page and page.count('name="allow_exports"') == 1  # HubSpot's only
    plain = await connect(browser, sandbox, "hubspot")
    exporting = await connect(browser, sandbox, "hubspot", allow_exports=True)
    ignored = await connect(browser, sandbox, "salesforce", allow_exports=True)  # not a Salesforce scope
    with db_engine.connect() as conn:
        scopes = {r.id: r.scopes for r in connection_store.list_connections(conn, tenant="acme")}
    assert "crm.export" in scopes[exporting]
    assert "crm.export" not in scopes[plain] and "crm.export" not in scopes[ignored]


async def test_instruction_editor_shows_withheld_fields_before_saving(
    browser: httpx.AsyncClient, sandbox: RunningSandbox, db_engine: Engine
) -> None:
    sf = await connect(browser, sandbox, "salesforce")
    page = await browser.get("/instructions/edit", params={"connection_id": sf, "stream": "Contact"})
    assert page.status_code == 200
    live = set(re.findall(r'name="allowed" value="([^"]+)"', page.text))
    assert {"Id", "Email", "Title", "MailingCity", "Lead_Score__c"} <= live
    assert f"Will be withheld ({len(live)} of {len(live)} fields)" in page.text  # nothing allowed yet
    form = {
        "csrf_token": csrf_of(page.text),
        "connection_id": sf,
        "stream": "Contact",
        "purpose": "crm-sync",
        "retention_days": "30",
        "permitted_regions": "eea",
        "permitted_subprocessors": "salesforce, hubspot",
        "data_categories": "contact_details",
        "allowed": ["Id", "Email", "FirstName", "LastName", "Phone", "SystemModstamp"],
        "pseudonymize": ["Phone"],
    }
    preview = await browser.post("/instructions/preview", data=form)
    assert preview.status_code == 200
    withheld = set(re.findall(r'<code class="withheld">([^<]+)</code>', preview.text))
    assert withheld == live - set(form["allowed"])
    assert {"Title", "MailingCity", "Lead_Score__c"} <= withheld
    with db_engine.connect() as conn:
        assert instruction_store.latest_instruction(conn, "acme") is None  # preview stores nothing
    saved = await browser.post("/instructions/save", data=form)
    assert saved.status_code == 303 and saved.headers["location"] == "/instructions?saved=1"
    with db_engine.connect() as conn:
        ins = instruction_store.latest_instruction(conn, "acme")
    assert ins is not None and ins.version == 1
    assert ins.content["allowed_fields"] == {"Contact": sorted(form["allowed"])}
    assert ins.content["pseudonymize"] == {"Contact": ["Phone"]}
    # pseudonymizing a withheld field is refused with the reason, and stores nothing
    bad = await browser.post("/instructions/save", data={**form, "pseudonymize": ["Title"]})
    assert bad.status_code == 400 and "not in allowed_fields" in bad.text
    again = await browser.post("/instructions/save", data={**form, "allowed": [*form["allowed"], "Title"]})
    assert again.headers["location"] == "/instructions?saved=2"
    listing = (await browser.get("/instructions")).text
    assert "v2" in listing and "v1" in listing and "in force" in listing


async def test_create_sync_form(
    browser: httpx.AsyncClient, sandbox: RunningSandbox, db_engine: Engine
) -> None:
    sf = await connect(browser, sandbox, "salesforce")
    hs = await connect(browser, sandbox, "hubspot")
    new = await browser.get("/syncs/new")
    assert "write one first" in new.text  # no instruction yet
    form = {
        "csrf_token": csrf_of(new.text),
        "sync_id": "contacts",
        "name": "SF contacts to HubSpot",
        "source_connection_id": sf,
        "source_stream": "Contact",
        "source_endpoint": "eu",
        "destination_connection_id": hs,
        "destination_stream": "contacts",
        "destination_endpoint": "eu1",
        "mapping": "Email=email\nFirstName=firstname",
        "source_key_property": "Email",
        "destination_id_property": "email",
    }
    r = await browser.post("/syncs", data=form)
    assert r.status_code == 400 and "instruction first" in r.text
    from api.demo import demo_instruction

    ins = demo_instruction("acme")
    with db_engine.begin() as conn:
        instruction_store.add_instruction(
            conn, tenant="acme", version=1, content=ins.model_dump(mode="json"),
            content_hash=ins.content_hash, now=datetime.now(UTC),
        )  # fmt: skip
    r = await browser.post("/syncs", data={**form, "mapping": "no equals sign"})
    assert r.status_code == 400 and "SourceField=destination_field" in r.text
    r = await browser.post("/syncs", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/syncs/contacts"
    with db_engine.connect() as conn:
        row = sync_store.get_sync(conn, "acme", "contacts")
    assert row is not None and row.spec.mapping == {"Email": "email", "FirstName": "firstname"}
    assert row.spec.instruction_version == 1
    detail = await browser.get("/syncs/contacts")
    assert detail.status_code == 200 and "SF contacts to HubSpot" in detail.text
    assert "Temporal is not part of this test" in detail.text  # progress unavailable, shown not raised
    listing = (await browser.get("/syncs")).text
    assert "Email → email" in listing and "v1" in listing
    assert (await browser.post("/syncs", data=form)).status_code == 400  # the id exists
    assert row.spec.write_mode is SyncWriteMode.UPSERT and 'id="write-mode">upsert<' in detail.text
    r = await browser.post("/syncs", data={**form, "sync_id": "contacts-mirror", "write_mode": "mirror"})
    assert r.status_code == 303
    with db_engine.connect() as conn:
        mirrored = sync_store.get_sync(conn, "acme", "contacts-mirror")
    assert mirrored is not None and mirrored.spec.write_mode is SyncWriteMode.MIRROR
    r = await browser.post("/syncs", data={**form, "sync_id": "contacts-x", "write_mode": "sideways"})
    assert r.status_code in (400, 422)  # not a write mode: refused, nothing stored
    with db_engine.connect() as conn:
        assert sync_store.get_sync(conn, "acme", "contacts-x") is None
