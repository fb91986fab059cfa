"""Short and empty HubSpot search pages (issue 13, behaviour 1) through the whole stack: HubSpot
contacts → Salesforce Contact, mirror, with the chaos suites' vendor faults on (tests/chaos/conftest.py).

After a full run (list API, opaque URL-encoded cursors), UPDATES contacts change, then ARCHIVED
contacts are archived, then UPDATES more change — each group one millisecond after the other, as if
made while the full read ran. HubSpot's search index still holds the archived records for an hour:
they take their places in the offset paging of the incremental read's search (200 a page) but show
nothing, so the read meets a short page (the first updates + stale hits), an empty page that still
carries ``paging.next.after`` (200 stale hits in a row) and another short one. 250 archived records
are the fewest that make a whole page of 200 stale after a short first page.

Checked: the incremental run completes; Salesforce = HubSpot's live contacts with the updated values
(0 lost, 0 duplicated by external id); the archived contacts deleted at Salesforce; every change
pulled and pushed once; the search calls bounded by the pages the changes and the stale hits fill;
the ledger verifies.

Reduced (CI): 2,000 contacts, 2 x 100 updates; full (``CRMHUB_CHAOS_FULL=1``): 10,000, 2 x 500.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest

from api.demo import _workers
from sandbox import faithful
from schemas.sync import SyncMode, SyncStatus
from tests import sync_support as stack
from tests.chaos.support import size
from tests.sync_support import HS_CONTACTS_TO_SF, World, create_sync

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

RECORDS = size(2_000, 10_000)
UPDATES = size(100, 500)  # before and after the archived ones
ARCHIVED = 250
SEARCH_LIMIT = 200  # connectors/hubspot/reader.py: HubSpot's search page maximum
D = dataclasses.replace(HS_CONTACTS_TO_SF, tenant="short-pages")


def _calls(crm: Any, prefix: str) -> int:
    return sum(n for name, n in crm.calls.counts().items() if name.startswith(prefix))


async def test_short_and_empty_search_pages_lose_and_duplicate_nothing(world: World) -> None:
    hs, sf = world.hs, world.sf
    assert faithful.is_on(world.sandbox)
    hs.seed({"contacts": RECORDS})
    await create_sync(world, D)
    async with _workers(world.settings):
        full = await world.run(D, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED and full.counts.pushed == RECORDS, full
        assert _calls(hs, "hs.list.contacts") >= math.ceil(RECORDS / 100)  # paged by the opaque cursors
        assert full.cursor is not None and full.cursor.isdigit()
        ids = sorted((r["id"] for r in hs.live_records("contacts")), key=int)
        first, archived, last = ids[:UPDATES], ids[UPDATES : UPDATES + ARCHIVED], ids[-UPDATES:]
        # Stamped just after the position the full read ended at (see the module docstring): the
        # incremental window ends ``search_settle_s`` before the run starts.
        for step, (group, change) in enumerate(((first, "First"), (archived, None), (last, "Last")), 1):
            hs.store.clock.freeze(int(full.cursor) + step)
            try:
                for n, rid in enumerate(group):
                    if change is None:
                        hs.delete_record("contacts", rid)
                    else:
                        hs.update_record("contacts", rid, {"firstname": f"{change}{n}"})
            finally:
                hs.store.clock.unfreeze()
        hs.calls.clear()
        sf.calls.clear()
        started = time.monotonic()
        inc = await world.run(D, SyncMode.INCREMENTAL)
        elapsed = time.monotonic() - started
    assert inc.status is SyncStatus.COMPLETED, inc
    assert inc.counts.failed == 0 and inc.counts.quarantined == 0, inc.counts

    stack.check_destination(world, D, stack.source_records(world, D))  # 0 lost, 0 duplicated, values current
    at_sf = {r["External_Id__c"] for r in sf.live_records("Contact")}
    assert not set(archived) & at_sf and len(at_sf) == RECORDS - ARCHIVED
    assert (inc.counts.pulled, inc.counts.pushed) == (2 * UPDATES, 2 * UPDATES), (
        inc.counts
    )  # each change once
    assert inc.counts.deleted == ARCHIVED, inc.counts

    searches = _calls(hs, "hs.search.contacts")
    # The search's offset paging walks the changes and the stale hits 200 a page; a short page
    # restarts the keyset after its last record, so each short page can cost one page more.
    stale_pages = math.ceil(ARCHIVED / SEARCH_LIMIT)
    bound = math.ceil((2 * UPDATES + ARCHIVED) / SEARCH_LIMIT) + stale_pages + 2
    assert searches <= bound, f"{searches} search calls (bound {bound}): {hs.calls.counts()}"
    # Salesforce takes 200 records a Collections call. The push keeps the source's order of updates
    # and deletes, and the archived records lie between the two groups of updates: one boundary,
    # so at most one partial call more than the records need.
    upserts, deletes = _calls(sf, "sf.collections_upsert"), sf.calls.counts().get("sf.collections", 0)
    assert upserts <= math.ceil(inc.counts.pushed / 200) + 1, sf.calls.counts()
    assert deletes <= math.ceil(ARCHIVED / 200), sf.calls.counts()
    print(  # the figures of docs/RELIABILITY.md row 19 (pytest -s)
        f"short/empty search pages: {RECORDS} contacts, {2 * UPDATES} updates around {ARCHIVED} archived; "
        f"incremental pulled {inc.counts.pulled} pushed {inc.counts.pushed} deleted {inc.counts.deleted} "
        f"in {inc.counts.batches} batches; "
        f"{searches} search calls (bound {bound}); HubSpot {hs.calls.counts()}; "
        f"Salesforce {sf.calls.counts()}; {elapsed:.1f} s"
    )
    counts = stack.check_ledger(world, D)
    assert counts["push.pushed"] == RECORDS + 2 * UPDATES
