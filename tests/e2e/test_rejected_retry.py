"""End to end (issue 14 item 4, first half): a record the destination refused is pushed again when it
is fixed at the source, and its dead letter is resolved — through the real stack (dev server, sandbox
CRMs over HTTPS, in-process region workers, ``db_url``). HubSpot contacts → Salesforce: a last name
longer than Salesforce's 80 characters is refused (``STRING_TOO_LONG``); shortened at HubSpot, the
next incremental run writes it, deletes the letter and its ``push`` event names the refusal's run.
"""

from __future__ import annotations

import pytest

from api.demo import _workers
from governance.lineage import Ledger
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from tests.e2e.test_sync_directions import _stamped_after
from tests.sync_support import HS_CONTACTS_TO_SF, World, check_ledger, create_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_refused_record_fixed_at_the_source_is_pushed_and_its_dead_letter_resolved(
    world: World,
) -> None:
    d = HS_CONTACTS_TO_SF
    hs, sf = world.hs, world.sf
    hs.seed({"contacts": 20})
    bad = hs.create_record("contacts", {"email": "long@retry.test", "lastname": "L" * 120})
    await create_sync(world, d)
    async with _workers(world.settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pushed, full.counts.failed) == (20, 1)
        with world.connected.engine.connect() as conn:
            (letter,) = dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id)
        assert letter.error_code == "STRING_TOO_LONG" and "L" * 20 not in letter.error_message
        with _stamped_after(hs, full):
            assert hs.update_record("contacts", bad, {"lastname": "Short"})
        fixed = await world.run(d, SyncMode.INCREMENTAL)
        assert fixed.status is SyncStatus.COMPLETED
        assert (fixed.counts.pushed, fixed.counts.failed) == (1, 0)
    assert {r["External_Id__c"]: r["LastName"] for r in sf.live_records("Contact")}[bad] == "Short"
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, d.tenant, d.sync_id) == 0
    pushes = [e for e in Ledger(world.connected.engine, d.tenant).read_events() if e.kind is EventKind.PUSH]
    resolving = pushes[-1]
    assert resolving.counts["resolved"] == 1
    assert resolving.details["resolved_refusals_of_runs"] == letter.run_id  # links to the refusal
    refusal = [e for e in pushes if e.run_id == letter.run_id]
    assert sum(e.counts["failed"] for e in refusal) == 1
    assert letter.record_key_hash in resolving.record_id_hashes
    check_ledger(world, d)
