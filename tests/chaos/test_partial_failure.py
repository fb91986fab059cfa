"""Partial failure (issue 7, scenario 5): a 200-record batch in which 7 records (seeded positions) are
invalid *at the vendor* — the destination CRM refuses them with its own error codes — through the
real stack (dev server, sandbox CRMs over HTTPS, in-process workers, OAuth connections, ``db_url``):

* → HubSpot (Salesforce Contact → HubSpot contacts): INVALID_EMAIL and INVALID_LONG_STRING inside
  HubSpot's batch 400 "Property values were not valid";
* → Salesforce (HubSpot contacts → Salesforce Contact): REQUIRED_FIELD_MISSING and STRING_TOO_LONG
  in sObject Collections' per-record results.

Checked: 193 written, 7 dead-lettered with the vendor's codes, lineage ``push.pushed`` 193 and
``push.failed`` 7; destination = the 193 valid source records, no duplicates. A second full sync
writes the 193 again as updates (0 duplicates) and the 7 stay dead-lettered once — 7 dead letters,
not 14 — while its own lineage records its 7 refusals. The write calls each run cost are asserted
from the destination's call log.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from api.demo import _workers
from schemas.sync import SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from tests.sync_support import (
    HS_CONTACTS_TO_SF,
    SF_CONTACTS_TO_HS,
    Direction,
    World,
    check_destination,
    check_ledger,
    create_sync,
    source_records,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

RECORDS = 200
BAD = 7
SEED = 5
TO_HUBSPOT = dataclasses.replace(SF_CONTACTS_TO_HS, tenant="pf-hs")
TO_SALESFORCE = dataclasses.replace(HS_CONTACTS_TO_SF, tenant="pf-sf")
# Endpoints that write at the destination.
WRITES = {"hubspot": "hs.batch.", "salesforce": "sf.collections"}


def _spoil(world: World, d: Direction) -> dict[str, str]:
    """Seed the source with RECORDS contacts and make BAD of them (seeded positions) invalid at the
    destination; returns source id → the destination's error code expected for it."""
    crm = world.crm(d.source)
    crm.seed({d.source_stream: RECORDS})
    ids = sorted(r["id"] for r in crm.live_records(d.source_stream))
    positions = sorted(random.Random(SEED).sample(range(RECORDS), BAD))
    expected: dict[str, str] = {}
    for n, pos in enumerate(positions):
        rid = ids[pos]
        if d.destination == "hubspot":
            if n % 2 == 0:
                change, code = {"Email": f"broken{n}@no-dot"}, "INVALID_EMAIL"
            else:
                change, code = {"FirstName": "x" * 70_000}, "INVALID_LONG_STRING"
        elif n % 2 == 0:
            change, code = {"lastname": ""}, "REQUIRED_FIELD_MISSING"
        else:
            change, code = {"lastname": "y" * 81}, "STRING_TOO_LONG"  # Contact.LastName: 80
        assert crm.update_record(d.source_stream, rid, change)
        expected[rid] = code
    return expected


def _writes(world: World, d: Direction) -> int:
    calls = world.crm(d.destination).calls
    n = sum(1 for c in calls.all() if c.endpoint.startswith(WRITES[d.destination]))
    calls.clear()
    return n


async def _refused_once_and_rerun_adds_nothing(world: World, d: Direction) -> tuple[int, int]:
    bad = _spoil(world, d)
    await create_sync(world, d)
    valid = [r for r in source_records(world, d) if r["id"] not in bad]
    codes = Counter(bad.values())
    world.crm(d.destination).calls.clear()
    async with _workers(world.settings):
        first = await world.run(d, SyncMode.FULL, may_fail=True)
        first_writes = _writes(world, d)
        second = await world.run(d, SyncMode.FULL, may_fail=True)
        second_writes = _writes(world, d)
    for p in (first, second):
        assert p.status is SyncStatus.COMPLETED, p.message
        assert (p.counts.pulled, p.counts.pushed, p.counts.failed) == (RECORDS, RECORDS - BAD, BAD)
    check_destination(world, d, valid)
    assert len(world.crm(d.destination).live_records(d.destination_stream)) == RECORDS - BAD

    with world.connected.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id)
    assert Counter(dl.error_code for dl in letters) == codes, "each refused record dead-lettered once"
    assert {dl.run_id for dl in letters} == {second.run_id}  # the latest refusal of each record
    counts = check_ledger(world, d)  # verifies offline too
    assert counts["push.pushed"] == 2 * (RECORDS - BAD)
    assert counts["push.failed"] == 2 * BAD  # each run's lineage records its own refusals
    assert counts["push.created"] == RECORDS - BAD and counts["push.updated"] == RECORDS - BAD
    return first_writes, second_writes


async def test_seven_of_two_hundred_refused_by_hubspot(world: World) -> None:
    first, second = await _refused_once_and_rerun_adds_nothing(world, TO_HUBSPOT)
    # connectors/hubspot/writer.py: the three values over HubSpot's 65,536 characters fail before any
    # call; a batch of 100 refused for its bad e-mails (HubSpot quotes them) costs the refused call
    # plus one for the rest. So at most 2 calls per batch of 100, and more than 1 per batch since
    # a bad e-mail is in one at least; the rerun costs the same. (It was 22 per run while the long
    # values went out and made the writer bisect.)
    batches = RECORDS // 100
    assert first == second and batches < first <= 2 * batches


async def test_seven_of_two_hundred_refused_by_salesforce(world: World) -> None:
    first, second = await _refused_once_and_rerun_adds_nothing(world, TO_SALESFORCE)
    assert (first, second) == (1, 1)  # one sObject Collections upsert of 200, allOrNone=false
