"""Acceptance: a customer in a real browser (headless Debian Chromium driven by playwright) logs in,
connects Salesforce and HubSpot through the sandbox's OAuth consent pages (clicking Allow / Connect
app), writes the processing instruction in the editor (seeing the withheld fields before saving),
creates a sync, runs it with an in-process worker on the session Temporal dev server, and watches
progress until the report shows what moved. The new sync is made as issue 17 asks: the destination
defaults to the other connection, the regions are shown (read from the vendors at connect), a typo
in the object turns into "did you mean Contact?", the fixed object opens the mapping editor with the
fields auto-matched. The HubSpot portal is hosted in the US (na1), so the instruction permits ``us``
and the push is a transfer under HubSpot's SCCs; three Salesforce contacts carry an e-mail HubSpot
refuses. After the run: the run's page (created counted from HubSpot's answers, the three dead
letters with code and reason, never the value), then the auditor — a token from ``crmhub audit token
create`` in a real process — reads the report's first page (tenant, period, purpose and instruction
version, data categories, subprocessors, the transfer with its mechanism, the run reconciled, created
vs updated) and narrows the period. Every page is screenshotted to ``<the test's tmp dir>/screenshots/``.

The sandbox serves HTTPS with its own CA, which Chromium does not trust: the browser context sets
``ignore_https_errors=True`` for the consent pages only a person would see. The app's own
server-side calls (token exchange, describe, the sync) keep verifying TLS against the sandbox CA.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from api.cli_web import add_user
from api.demo import _workers
from api.web import create_app
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings
from store import instructions as instruction_store
from store.engine import make_engine
from tests.api.test_cli_connect import crmhub
from tests.api.web.conftest import PASSWORD, make_tenant
from tests.ports import free_port
from tests.stack import sandbox_oauth_configs, stack_settings
from tests.sync_support import worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONTACTS = 2_000
# Salesforce contacts whose e-mail HubSpot refuses (INVALID_EMAIL): the run page's dead letters
BAD_EMAILS = tuple(f"not-an-email-{i}" for i in range(3))


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    return stack_settings(tmp_path / "data", db_url, temporal_env, pages_per_activity=2)


@pytest.fixture
def sandbox(settings: Settings, port: int) -> Iterator[RunningSandbox]:
    with start_sandbox(
        settings.data_dir,
        seed_counts={"salesforce": {"Account": 10, "Contact": CONTACTS}},
        redirect_uris=(f"http://127.0.0.1:{port}/oauth/callback",),
        hubspot_location="na1",  # a US portal: the push is a transfer EEA → US under HubSpot's SCCs
    ) as sb:
        for i, email in enumerate(BAD_EMAILS):
            sb.salesforce.create_record("Contact", {"LastName": f"Bad{i}", "Email": email})
        yield sb


@pytest.fixture
def server(settings: Settings, sandbox: RunningSandbox, port: int) -> Iterator[str]:
    """The web app served by uvicorn on a thread (its own event loop), like ``crmhub web``."""
    engine = make_engine(settings.effective_database_url)
    make_tenant(engine, "acme", "Acme GmbH")
    engine.dispose()
    add_user(settings, "acme", "ana@acme.example", PASSWORD)
    redirect = f"http://127.0.0.1:{port}/oauth/callback"
    app = create_app(
        settings,
        redirect_uri=redirect,
        oauth_configs=sandbox_oauth_configs(sandbox, redirect_uri=redirect),
    )
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=srv.run, name="crmhub-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=20)


async def shot(page: Page, shots: Path, name: str) -> None:
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


async def connect(page: Page, shots: Path, base: str, label: str, button: str, name: str) -> None:
    await page.goto(f"{base}/connections")
    await page.click(f"text=Connect {label}")
    await page.wait_for_selector(button)  # the provider's consent page
    assert page.url.startswith("https://127.0.0.1:")
    await shot(page, shots, f"03-consent-{name}")
    await page.click(button)
    await page.wait_for_url(f"{base}/connections?connected=*")


async def test_customer_connects_configures_and_runs_a_sync_in_a_browser(
    server: str, settings: Settings, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = server
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = await browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        # script errors and CSP violations are console errors; failed loads are checked per response
        errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text
                else None
            ),
        )
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        try:
            # log in
            await page.goto(f"{base}/")
            assert page.url == f"{base}/login"
            await shot(page, shots, "01-login")
            await page.fill("input[name=organisation]", "acme")
            await page.fill("input[name=email]", "ana@acme.example")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button:has-text('Log in')")
            await page.wait_for_url(f"{base}/")
            assert "Acme GmbH" in await page.content()
            await shot(page, shots, "02-dashboard")

            # connect both CRMs through their consent pages
            await connect(page, shots, base, "Salesforce", "#oaapprove", "salesforce")
            await connect(page, shots, base, "HubSpot", "#grant", "hubspot")
            assert await page.locator(".badge.ok").count() == 2
            await shot(page, shots, "04-connections")

            # the instruction editor: see what is withheld before saving
            await page.goto(f"{base}/instructions")
            await page.select_option("select[name=connection_id]", label=await _option(page, "salesforce"))
            await page.click("text=Open editor")
            await page.wait_for_selector("#withheld")
            for field in (
                "Id",
                "Email",
                "FirstName",
                "LastName",
                "Phone",
                "MailingCountry",
                "SystemModstamp",
            ):
                await page.check(f"input[name=allowed][value={field}]")
            await page.check("input[name=pseudonymize][value=Phone]")
            # the HubSpot portal is in the US: the controller permits that region for this purpose
            assert await page.input_value("input[name=permitted_regions]") == "eea"
            await page.fill("input[name=permitted_regions]", "eea, us")
            async with page.expect_navigation():  # the preview is a new page (a POST, no script)
                await page.click("text=Preview withheld fields")
            withheld = await page.locator("code.withheld").all_inner_texts()
            assert {"Title", "MailingCity", "Lead_Score__c"} <= set(withheld)
            assert "Email" not in withheld
            await shot(page, shots, "05-instruction-preview")
            await page.click("text=Save as new version")
            await page.wait_for_url(f"{base}/instructions?saved=1")
            await shot(page, shots, "06-instructions")

            # create the sync: connections, then objects (a typo first), then the mapping editor
            await page.goto(f"{base}/syncs/new")
            source = page.locator("select[name=source_connection_id] option:checked")
            destination = page.locator("select[name=destination_connection_id] option:checked")
            assert (await source.inner_text()).startswith("salesforce")
            assert (await destination.inner_text()).startswith("hubspot")  # not the source by default
            await shot(page, shots, "07-new-sync-connections")
            async with page.expect_navigation():
                await page.click("button:has-text('Next: objects')")
            regions = await page.locator(".region").all_inner_texts()  # shown, not asked
            assert regions == [
                "Data hosted at eu (European Economic Area), as salesforce reported it.",
                "Data hosted at na1 (United States), as hubspot reported it.",
            ]
            assert await page.locator("input[name=source_endpoint]").count() == 0
            assert await page.input_value("input[name=destination_stream]") == "contacts"
            await page.fill("input[name=source_stream]", "Contacts")  # the typo of issue 17
            async with page.expect_navigation():
                await page.click("button:has-text('Next: mapping')")
            guidance = await page.locator("#sync-error").inner_text()
            assert "source_stream: the salesforce connection has no object 'Contacts'" in guidance
            assert "did you mean Contact?" in guidance
            assert await page.locator("#step-mapping").count() == 0
            await shot(page, shots, "08-new-sync-typo")
            await page.fill("input[name=source_stream]", "Contact")
            async with page.expect_navigation():
                await page.click("button:has-text('Next: mapping')")
            auto = {
                f: await page.input_value(f"select[aria-label='destination of {f}']")
                for f in ("Email", "FirstName", "LastName", "Phone", "MailingCountry")
            }
            assert auto == {
                "Email": "Email=email",
                "FirstName": "FirstName=firstname",
                "LastName": "LastName=lastname",
                "Phone": "Phone=phone",
                "MailingCountry": "",  # no name or label match: the user picks it
            }
            assert await page.locator("#mapping .badge.ok").count() == 4
            country = "select[aria-label='destination of MailingCountry']"
            check = page.locator("tr[data-source=MailingCountry] td.check")
            await page.select_option(country, "MailingCountry=lead_score")  # flagged as the user picks
            assert await check.inner_text() == "type mismatch: string values into a number field"
            await page.select_option(country, "MailingCountry=country")
            assert await check.inner_text() == "ok"
            assert await page.input_value("select[name=source_key_property]") == "Email"
            assert await page.input_value("select[name=destination_id_property]") == "email"
            await page.fill("input[name=sync_id]", "contacts")
            await page.fill("input[name=name]", "Salesforce contacts to HubSpot")
            await shot(page, shots, "09-new-sync-mapping")
            await page.click("text=Create sync")
            await page.wait_for_url(f"{base}/syncs/contacts")

            # run it with a worker and watch the progress until the report shows the result
            async with _workers(settings):
                async with page.expect_navigation():
                    await page.click("button:has-text('Run now')")
                await page.wait_for_selector(
                    "#progress .badge.running, #progress .badge.completed", timeout=60_000
                )
                await shot(page, shots, "10-sync-progress")
                await page.wait_for_selector("#progress .badge.completed", timeout=180_000)  # meta refresh
            report = await page.locator("#report").inner_text()
            assert f"{CONTACTS:,}" in report and "completed" in report
            await shot(page, shots, "11-sync-report")
            await run_page(page, shots, base)
            await page.goto(f"{base}/syncs")
            assert "completed" in await page.content()
            await shot(page, shots, "13-syncs")
            await page.goto(f"{base}/")
            await shot(page, shots, "14-dashboard-after")
            await page.click("text=Log out")
            await page.wait_for_url(f"{base}/login")
            assert errors == []  # no CSP violation or script error on any page
            # nothing failed to load from the app (the sandbox's consent pages have no favicon) but
            # the one refused step: the typo, answered 400 with its guidance
            from_app = [f for f in failed if base in f.split(" ", 1)[1]]
            assert len(from_app) == 1 and from_app[0].startswith(f"400 {base}/syncs/new?"), from_app
            await auditor_report(browser, shots, base, settings, tmp_path)
        finally:
            await context.close()
            await browser.close()
    hs: Any = sandbox.hubspot
    contacts = hs.live_records("contacts")
    assert len(contacts) == CONTACTS  # the refused ones are dead letters, not contacts
    assert all("title" not in c for c in contacts)
    assert all(str(c.get("phone") or "ps_").startswith("ps_") for c in contacts)


async def _option(page: Page, provider: str, which: str = "") -> str:
    """The visible label of the first option for ``provider`` in the page's (first or named) select."""
    select = f"select[name={which}_connection_id]" if which else "select[name=connection_id]"
    labels = await page.locator(f"{select} option").all_inner_texts()
    return next(label for label in labels if label.startswith(provider))


async def run_page(page: Page, shots: Path, base: str) -> None:
    """The run's own page, opened from the sync's report: what moved (created counted from HubSpot's
    answers: an empty portal, so every contact is new), and the refused records as dead letters with
    the vendor's code and a reason that quotes no value."""
    async with page.expect_navigation():
        await page.click("#report tbody tr:first-child a")
    assert "/syncs/contacts/runs/" in page.url
    counts = " ".join((await page.locator("#counts").inner_text()).split())
    bad = len(BAD_EMAILS)
    assert f"pulled {CONTACTS + bad:,}" in counts and f"pushed {CONTACTS:,}" in counts, counts
    assert f"created {CONTACTS:,}" in counts and "updated 0" in counts and f"failed {bad}" in counts, counts
    letters = page.locator("#dead-letters")
    assert f"Dead letters ({bad})" in await letters.locator("h2").inner_text()
    assert await letters.locator("tbody tr").count() == bad
    assert set(await letters.locator("tbody td:nth-child(4)").all_inner_texts()) == {"INVALID_EMAIL"}
    reasons = await letters.locator("tbody td:nth-child(5)").all_inner_texts()
    assert all(r.strip() for r in reasons), reasons  # a reason for each …
    shown = await page.content()
    assert not any(email in shown for email in BAD_EMAILS)  # … never the value
    assert "stays sealed" in await letters.inner_text()
    await shot(page, shots, "12-run")


async def auditor_report(
    browser: Browser, shots: Path, base: str, settings: Settings, tmp_path: Path
) -> None:
    """The auditor's turn: ops issue a token with the CLI (``crmhub audit token create``, a real
    process on this test's data dir and database); the auditor's browser sends it on every request
    and reads the report's first page, then narrows the period with its form."""
    made = crmhub(worker_env(settings), tmp_path, "audit", "token", "create", "--tenant", "acme",
                  "--name", "DPA audit 2026", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    context = await browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {token}"}, viewport={"width": 1280, "height": 900}
    )
    try:
        page = await context.new_page()
        answered = await page.goto(f"{base}/audit/lineage?format=html")
        assert answered is not None and answered.status == 200
        first = page.locator("#first-page")
        facts = " ".join((await first.locator("#facts").inner_text()).split())
        engine = make_engine(settings.effective_database_url)
        try:
            with engine.connect() as conn:
                ins = instruction_store.get_instruction(conn, "acme", 1)
        finally:
            engine.dispose()
        assert ins is not None
        assert "Controller (tenant) Acme GmbH (acme), home region eea" in facts, facts
        assert "Period the ledger's beginning \u2013 now" in facts, facts
        assert "Purposes crm-sync" in facts, facts
        assert f"Instruction versions v1 {ins.content_hash} (crm-sync, retention 30 days)" in facts, facts
        assert "Data categories contact_details" in facts, facts
        assert "all 1 run(s) reconcile" in facts, facts
        rows = [r.split("\t") for r in await first.locator("#subprocessors tbody tr").all_inner_texts()]
        # who touched the data, authorised or not, doing what, where
        assert {r[0]: (r[3], r[4], r[5]) for r in rows} == {
            "crmhub GmbH": ("yes", "store 2", "eea"),
            "Salesforce, Inc.": ("yes", "pull 1", "eea"),
            "HubSpot, Inc.": ("yes", "push 1, transfer 1", "eea, us"),
        }, rows
        transfers = await first.locator("#transfers tbody tr td:first-child").all_inner_texts()
        assert transfers == ["eea->us hubspot (scc)"], transfers  # the route and its mechanism
        bad = len(BAD_EMAILS)
        (check,) = await first.locator("#reconciliation tbody tr").all()
        cells = [" ".join(c.split()) for c in await check.locator("td").all_inner_texts()]
        # pulled = pushed (created / updated) + failed + quarantined + filtered, and it passes
        assert cells[1:] == ["completed", f"{CONTACTS + bad:,}", f"{CONTACTS:,} ({CONTACTS:,} / 0)", str(bad),
                             "0", "0", "passes: every pulled record is accounted for"], cells  # fmt: skip
        await shot(page, shots, "15-auditor-report")
        # the period filter: a period before the run holds none of it
        await page.fill("input[name=from]", "2020-01-01")
        await page.fill("input[name=to]", "2020-02-01")
        async with page.expect_navigation():
            await page.click("button:has-text('Show this period')")
        facts = " ".join((await page.locator("#facts").inner_text()).split())
        assert "Period 2020-01-01T00:00:00" in facts, facts
        assert "Purposes none: no run in this period" in facts, facts
        await shot(page, shots, "16-auditor-report-period")
    finally:
        await context.close()
