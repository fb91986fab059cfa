"""The late-commit phase the crash and fault-storm suites run after their full runs (issue 13).

``updates`` Salesforce contacts change with the late-commit mode on (every third write of the
handle is held back, to be committed with its original SystemModstamp) and two contacts are merged
into two others (losers deleted with ``MasterRecordId``, masters updated); then two incremental runs
of the demo's Salesforce → HubSpot sync. The held writes are due 30 s later, longer than the first
run takes, so the first run reads and passes them; the mode's end commits them, below its cursor,
and only the second run's overlap window can find them (it must). Checked: HubSpot = the
source's live contacts (0 lost, 0 duplicated by e-mail) with every updated value; the merged
losers gone and their masters' values there; every changed contact pushed once over both runs —
except the pairs beyond the overlap window's bound (``overlap_max_ids``), which the second run hands
out again rather than risk passing a late commit among them (connectors/salesforce/overlap.py); the
Salesforce reads and HubSpot writes bounded by the pages and batches the changes need. The
caller supplies the workers (in-process or a ``crmhub worker`` subprocess).
"""

from __future__ import annotations

import math
import time
from typing import Any

from connectors.salesforce.config import SalesforceConfig
from sandbox.runtime import RunningSandbox
from schemas.settings import Settings
from schemas.sync import Progress, SyncMode, SyncStatus
from tests.sync_support import DEMO_SYNC, run_sync
from workers.client import Connected

__all__ = ["LATE_DELAY_MS", "LATE_EVERY", "late_commits_and_merges"]

LATE_EVERY, LATE_DELAY_MS = 3, 30_000
SF_PAGE, HS_BATCH = 2_000, 100  # Salesforce query page; HubSpot batch upsert
OVERLAP_MAX_IDS: int = SalesforceConfig.model_fields["overlap_max_ids"].default


async def _incremental(demo: Connected, settings: Settings, tenant: str) -> Progress:
    p = await run_sync(demo, settings, tenant, DEMO_SYNC, SyncMode.INCREMENTAL)
    assert p.status is SyncStatus.COMPLETED, p
    assert p.counts.failed == 0 and p.counts.quarantined == 0, p.counts
    return p


async def late_commits_and_merges(
    demo: Connected, settings: Settings, sandbox: RunningSandbox, tenant: str, updates: int
) -> str:
    """The phase (see the module docstring); its figures as one line for the suite to print."""
    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    ids = sorted(r["id"] for r in sf.live_records("Contact"))
    updated, (m1, l1, m2, l2) = ids[:updates], ids[updates : updates + 4]
    loser_emails = {sf.store.get("Contact", i).data["Email"] for i in (l1, l2)}
    sf.calls.clear()
    hs.calls.clear()
    started = time.monotonic()
    runs: list[Progress] = []
    with sf.late.mode(every=LATE_EVERY, delay_ms=LATE_DELAY_MS):
        for n, i in enumerate(updated):
            sf.update_record("Contact", i, {"FirstName": f"Late{n}"})
        sf.merge_records("Contact", m1, [l1], {"LastName": "Merged"})
        sf.merge_records("Contact", m2, [l2], {"LastName": "Merged"})
        assert sf.late.open_since() is not None  # writes are held as the first run starts
        runs.append(await _incremental(demo, settings, tenant))
    runs.append(await _incremental(demo, settings, tenant))  # the mode's end committed what was held
    elapsed = time.monotonic() - started

    source = {r["Email"]: r for r in sf.live_records("Contact")}
    at_hs = hs.live_records("contacts")
    emails = [r["email"] for r in at_hs]
    assert len(emails) == len(set(emails)), "a contact was duplicated at HubSpot"
    lost, extra = set(source) - set(emails), set(emails) - set(source)
    assert not lost and not extra, f"lost {len(lost)}, extra {len(extra)}"
    assert not loser_emails & set(emails), "a merged loser is still at HubSpot"
    stale = [r["email"] for r in at_hs if r.get("firstname") != source[r["email"]].get("FirstName")]
    assert not stale, f"{len(stale)} contacts miss a late-committed update: {stale[:5]}"
    masters = {sf.store.get("Contact", m).data["Email"] for m in (m1, m2)}
    assert all(r.get("lastname") == "Merged" for r in at_hs if r["email"] in masters), "a master's values"
    pushed = sum(p.counts.pushed for p in runs)
    # Pairs the first run handed out beyond the window's bound are the only ones handed out twice.
    beyond = max(0, runs[0].counts.pulled + runs[0].counts.deleted - OVERLAP_MAX_IDS)
    assert updates + 2 <= pushed <= updates + 2 + beyond, (
        f"{pushed} pushes for {updates + 2} changed contacts ({beyond} beyond the overlap bound)"
    )
    assert 2 <= sum(p.counts.deleted for p in runs) <= 2 + beyond
    assert runs[1].counts.pushed > 0, "nothing was committed late below the first run's cursor"

    sf_calls, hs_calls = sf.calls.counts(), hs.calls.counts()
    reads = sum(sf_calls.get(e, 0) for e in ("sf.query", "sf.queryAll", "sf.query_more"))
    upserts = hs_calls.get("hs.batch.upsert.contacts", 0)
    # A run reads its changes in pages (+1 to learn there is no more) and writes them in batches.
    assert reads <= sum(math.ceil(p.counts.pulled / SF_PAGE) + 1 for p in runs), sf_calls
    assert upserts <= sum(math.ceil(p.counts.pushed / HS_BATCH) for p in runs), hs_calls
    assert hs_calls.get("hs.batch.archive.contacts", 0) <= len(runs), hs_calls
    return (
        f"late commits + merges: {updates} updates (every {LATE_EVERY}rd held past the first run), "
        f"2 merges; runs pulled {[p.counts.pulled for p in runs]} pushed {[p.counts.pushed for p in runs]} "
        f"deleted {[p.counts.deleted for p in runs]} ({beyond} beyond the overlap bound); "
        f"Salesforce {dict(sf_calls)}; HubSpot {dict(hs_calls)}; "
        f"{elapsed:.1f} s"
    )
