"""The first page of the lineage report (issue 17, item 5): what a data-protection auditor reads first —
tenant, period, purposes and instruction versions, data categories, subprocessors, transfers with
their mechanism, and each run's reconciliation shown passing or failing — a period filter, and a
print layout (checked by printing it in Debian Chromium). JSON and CSV keep their meaning
(tests/api/audit/test_audit_api.py)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from api.audit.cover import reconcile
from governance.lineage import Ledger
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from tests.api.audit.test_audit_api import T0, _get, world
from tests.api.web.test_web_browser import CHROMIUM, CHROMIUM_ARGS

__all__ = ["world"]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "audit"


def _run(
    status: str | None, pulled: int, pushed: int, failed: int = 0, quarantined: int = 0
) -> dict[str, Any]:
    counts = {"pulled": pulled, "pushed": pushed, "created": pushed, "updated": 0, "failed": failed,
              "quarantined": quarantined}  # fmt: skip
    return {"sync_id": "s", "run_id": "r", "status": status, "started": None, "counts": counts}


@pytest.mark.parametrize(
    ("run", "ok", "note"),
    [
        (_run("completed", 10, 7, 2, 1), True, "every pulled record is accounted for"),
        (_run("cancelled", 10, 4), True, "6 discarded with the staging of a cancelled run"),
        (_run("failed", 10, 0), True, "10 discarded with the staging of a failed run"),
        (_run("completed", 10, 9), False, "1 pulled record(s) unaccounted for in a completed run"),
        (_run(None, 10, 9), False, "1 pulled record(s) unaccounted for in a unrecorded run"),
        (_run("completed", 10, 11), False, "1 more written or dead-lettered than pulled"),
    ],
)
def test_reconciliation_passes_or_fails_per_run(run: dict[str, Any], ok: bool, note: str) -> None:
    check = reconcile(run)
    assert (check["ok"], check["note"]) == (ok, note)
    assert check["filtered"] == max(run["counts"]["pulled"] - check["pushed"] - check["failed"]
                                     - check["quarantined"], 0)  # fmt: skip


def test_first_page_says_who_why_what_where_and_whether_it_adds_up(world: dict[str, Any]) -> None:
    html = _get(world, "/audit/lineage?format=html", "alpha").text
    first = html[html.index('id="first-page"') : html.index('id="details"')]
    assert "Processing report: alpha GmbH" in first
    assert "beginning \u2013 now" in first  # the whole ledger: no period given
    assert "purpose-alpha" in first and "v2 <code>sha256:alpha</code>" in first
    assert "contact_details" in first
    subprocessors = first[first.index('id="subprocessors"') : first.index('id="transfers"')]
    assert "HubSpot, Inc." in subprocessors and "Salesforce" in subprocessors and "NO" not in subprocessors
    transfers = first[first.index('id="transfers"') : first.index('id="reconciliation"')]
    assert "eea-&gt;us hubspot (scc)" in transfers and "none recorded" not in transfers
    assert '<span class="verdict pass">all 2 run(s) reconcile</span>' in first
    assert first.count(">passes: every pulled record is accounted for<") == 2
    assert "4 (3 / 0)" not in first and "3 (3 / 0)" in first  # pushed (created / updated)
    # the period filter asks the same route again
    assert 'form class="period" method="get" action="/audit/lineage"' in first
    assert "bravo" not in html  # the other tenant's names never appear


def test_period_filter_and_a_run_that_does_not_reconcile(world: dict[str, Any]) -> None:
    empty = _get(world, "/audit/lineage?format=html&from=2025-04-01", "alpha").text
    assert "none: no run in this period" in empty and "2025-04-01T00:00:00" in empty
    assert 'name="from" value="2025-04-01"' in empty

    # a run whose push answered for more records than its pull read (e.g. counted twice)
    src = DatasetRef(namespace="salesforce://alpha.example", name="Contact")
    dst = DatasetRef(namespace="hubspot://alpha.example", name="contacts")
    common: dict[str, Any] = {
        "tenant": "alpha", "run_id": "run-alpha-odd", "sync_id": "sync-alpha", "instruction_version": 2,
        "instruction_hash": "sha256:alpha", "purpose": "purpose-alpha", "timestamp": T0 + timedelta(days=40),
    }  # fmt: skip
    Ledger(world["engine"], "alpha").append(
        [
            LineageEvent(kind=EventKind.PULL, source=src, counts={"records": 5}, **common),
            LineageEvent(kind=EventKind.PUSH, destination=dst, counts={"pushed": 6, "created": 6}, **common),
        ]
    )
    html = _get(world, "/audit/lineage?format=html&from=2025-04-01&to=2025-05-01", "alpha").text
    assert '<span class="verdict fail">1 of 1 run(s) do not reconcile</span>' in html
    assert "FAILS: 1 more written or dead-lettered than pulled" in html
    everything = _get(world, "/audit/lineage?format=html", "alpha").text
    rows = re.findall(r'<tr id="check-([^"]+)">', everything)
    assert rows[0] == "run-alpha-odd"  # a failing run is listed first
    assert '<span class="verdict fail">1 of 3 run(s) do not reconcile</span>' in everything


@pytest.mark.integration
async def test_the_report_prints_its_first_page_alone(world: dict[str, Any]) -> None:
    html = _get(world, "/audit/lineage?format=html", "alpha").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.set_content(html)
            await page.screenshot(path=str(ARTIFACTS / "lineage-first-page.png"), full_page=True)
            await page.emulate_media(media="print")
            styles = await page.evaluate(
                """() => ({
                    breakAfter: getComputedStyle(document.getElementById('first-page')).breakAfter,
                    form: getComputedStyle(document.querySelector('form.period')).display,
                    detailsPage: getComputedStyle(document.getElementById('details')).page,
                })"""
            )
            assert styles == {"breakAfter": "page", "form": "none", "detailsPage": "details"}
            pdf = await page.pdf(prefer_css_page_size=True, print_background=True)
        finally:
            await browser.close()
    (ARTIFACTS / "lineage.pdf").write_bytes(pdf)
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert pages >= 2  # the first page, then the figures per run on their own (landscape) page(s)
