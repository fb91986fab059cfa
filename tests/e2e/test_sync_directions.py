"""End to end (issue 5 acceptance): the other sync directions through the real stack — the dev
server, the sandbox CRMs over HTTPS, in-process region workers, OAuth connections, ``db_url``.

* HubSpot contacts → Salesforce Contact (upsert by ``External_Id__c`` = HubSpot ``hs_object_id``;
  contacts without the required LastName are dead-lettered REQUIRED_FIELD_MISSING and counted);
* Salesforce Account → HubSpot companies (upsert by the unique company property ``external_id`` =
  the tenant's keyed pseudonym of the Account Id: stable, so upserts and deletes find the company,
  and the Salesforce id itself never reaches HubSpot);
* HubSpot companies → Salesforce Account (upsert by ``External_Id__c`` = ``hs_object_id``).

Each case has its own tenant, instruction and sync, runs a full sync and then an incremental one
after modifications and deletes (archives) at the source, and checks that exactly the source lands
(count, key fields, no duplicates by external id), that fields outside the instruction are absent
at the destination, that lineage counts match the destination and that the ledger verifies offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from api.demo import _workers
from sandbox.fake import BASE_EPOCH_MS
from schemas.settings import Settings
from schemas.sync import Progress, SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from tests.sync_support import (
    HS_CONTACTS_TO_SF,
    Direction,
    World,
    check_destination,
    check_ledger,
    create_sync,
    source_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# When source records created as test data "happened" (long before the full sync reads them).
LONG_AGO_MS = BASE_EPOCH_MS + 86_400_000

SF_ACCOUNTS_TO_HS = Direction(
    tenant="sf-accounts",
    source="salesforce",
    source_stream="Account",
    destination="hubspot",
    destination_stream="companies",
    mapping={
        "Name": "name",
        "Industry": "industry",
        "NumberOfEmployees": "numberofemployees",
        "BillingCity": "city",
        "BillingCountry": "country",
    },
    source_key="Id",
    destination_id="external_id",
    cursor_field="SystemModstamp",
    pseudonymize=("Id",),
)
HS_COMPANIES_TO_SF = Direction(
    tenant="hs-companies",
    source="hubspot",
    source_stream="companies",
    destination="salesforce",
    destination_stream="Account",
    mapping={
        "name": "Name",
        "industry": "Industry",
        "numberofemployees": "NumberOfEmployees",
        "city": "BillingCity",
        "country": "BillingCountry",
    },
    source_key="hs_object_id",
    destination_id="External_Id__c",
    cursor_field="hs_lastmodifieddate",
)


def _dead_letter_codes(world: World, d: Direction) -> Counter[str]:
    with world.connected.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id)
    return Counter(dl.error_code for dl in letters)


@contextlib.contextmanager
def _stamped_after(hs: Any, full: Progress) -> Iterator[None]:
    """HubSpot changes stamped 1 ms after the position the full read ended at, as if made while it
    ran. (An incremental read's window ends ``search_settle_s`` before it starts — HubSpot's search
    index lags writes — so changes stamped "now" would only be seen by a read that much later.)"""
    assert full.cursor is not None and full.cursor.isdigit()
    hs.store.clock.freeze(int(full.cursor) + 1)
    try:
        yield
    finally:
        hs.store.clock.unfreeze()


async def test_hubspot_contacts_to_salesforce_contacts(settings, world: World) -> None:
    d = HS_CONTACTS_TO_SF
    hs = world.hs
    hs.seed({"contacts": 1_000})
    hs.store.clock.freeze(LONG_AGO_MS)  # test data created long before the sync
    try:
        nameless = [
            hs.create_record("contacts", {"email": f"nameless{i}@example.test", "firstname": f"Anon{i}"})
            for i in range(12)
        ]
    finally:
        hs.store.clock.unfreeze()
    await create_sync(world, d)

    def landing() -> list[dict[str, Any]]:  # Salesforce requires LastName: only these can land
        return [r for r in source_records(world, d) if r.get("lastname")]

    async with _workers(settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (1_012, 1_000, 12)
        assert _dead_letter_codes(world, d) == {"REQUIRED_FIELD_MISSING": 12}
        check_destination(world, d, landing())

        ids = sorted((r["id"] for r in hs.live_records("contacts") if r["id"] not in nameless), key=int)
        with _stamped_after(hs, full):
            for i, cid in enumerate(ids[:30]):
                hs.update_record("contacts", cid, {"firstname": f"Renamed{i}"})
            for cid in ids[30:50]:
                hs.delete_record("contacts", cid)
            hs.update_record("contacts", nameless[0], {"lastname": "Named"})  # fixed at the source: lands
            for i in range(5):
                new = {"email": f"new{i}@example.test", "firstname": "New", "lastname": f"Contact{i}"}
                hs.create_record("contacts", new)
        inc = await world.run(d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed, inc.counts.failed) == (36, 36, 0)
    assert inc.counts.deleted == 20
    check_destination(world, d, landing())
    destination = world.sf.live_records("Contact")
    assert len(destination) == 1_000 - 20 + 1 + 5

    counts = check_ledger(world, d)
    assert counts["pull.records"] == 1_012 + 36
    assert counts["pull.deleted"] == 20
    assert counts["push.pushed"] == 1_000 + 36  # lineage counts = destination writes
    assert counts["push.failed"] == 12
    assert counts["delete.deleted"] == 20
    assert counts["push.created"] - counts["delete.deleted"] == len(destination)


async def _companies_full_then_incremental(
    world: World, d: Direction, change: Callable[[Progress], None]
) -> None:
    """A full sync of the 800 seeded companies/accounts; ``change(full)`` renames 25 and deletes 15 at
    the source; an incremental sync. Both land exactly the source, and the lineage agrees."""
    async with _workers(world.settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (800, 800, 0)
        check_destination(world, d, source_records(world, d))
        change(full)
        inc = await world.run(d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed, inc.counts.failed) == (25, 25, 0)
    assert inc.counts.deleted == 15
    check_destination(world, d, source_records(world, d))
    destination = world.crm(d.destination).live_records(d.destination_stream)
    assert len(destination) == 800 - 15

    counts = check_ledger(world, d)
    assert counts["pull.records"] == 800 + 25
    assert counts["pull.deleted"] == 15
    assert counts["push.pushed"] == 800 + 25
    assert counts["delete.deleted"] == 15
    assert counts["push.created"] - counts["delete.deleted"] == len(destination)


async def test_salesforce_accounts_to_hubspot_companies(world: World) -> None:
    sf = world.sf
    sf.seed({"Account": 800})
    await create_sync(world, SF_ACCOUNTS_TO_HS)

    def change(full: Progress) -> None:
        ids = sorted(r["id"] for r in sf.live_records("Account"))
        for i, aid in enumerate(ids[:25]):
            sf.update_record("Account", aid, {"Name": f"Renamed {i} AG", "NumberOfEmployees": 7 + i})
        for aid in ids[25:40]:
            sf.delete_record("Account", aid)

    await _companies_full_then_incremental(world, SF_ACCOUNTS_TO_HS, change)


async def test_hubspot_companies_to_salesforce_accounts(world: World) -> None:
    hs = world.hs
    hs.seed({"companies": 800})
    await create_sync(world, HS_COMPANIES_TO_SF)

    def change(full: Progress) -> None:
        ids = sorted((r["id"] for r in hs.live_records("companies")), key=int)
        with _stamped_after(hs, full):
            for i, cid in enumerate(ids[:25]):
                hs.update_record("companies", cid, {"name": f"Renamed {i} SE", "city": "Lyon"})
            for cid in ids[25:40]:
                hs.delete_record("companies", cid)

    await _companies_full_then_incremental(world, HS_COMPANIES_TO_SF, change)


async def test_hubspot_contacts_through_an_export_when_the_connection_allows_it(
    settings: Settings, world: World
) -> None:
    """A HubSpot connection granted ``crm.export`` (``crmhub connect hubspot --allow-exports``) and a
    worker with ``CRMHUB_CONNECTORS__HUBSPOT__EXPORT_THRESHOLD=500``: the full sync reads the 1,000
    contacts through one HubSpot export — the same records land, the lineage agrees — and the next
    incremental sync searches for the changes as before."""
    d = dataclasses.replace(HS_CONTACTS_TO_SF, tenant="hs-export")
    hs = world.hs
    hs.seed({"contacts": 1_000})
    await create_sync(world, d, extra_scopes={"hubspot": ["crm.export"]})
    worker_settings = settings.model_copy(update={"connectors": {"hubspot": {"export_threshold": 500}}})
    async with _workers(worker_settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert (full.counts.pulled, full.counts.pushed, full.counts.failed) == (1_000, 1_000, 0)
        assert [(t.status, t.rows) for t in hs.export_tasks()] == [("COMPLETE", 1_000)]
        check_destination(world, d, source_records(world, d))

        ids = sorted((r["id"] for r in hs.live_records("contacts")), key=int)
        with _stamped_after(hs, full):
            for i, cid in enumerate(ids[:10]):
                hs.update_record("contacts", cid, {"firstname": f"Renamed{i}"})
        inc = await world.run(d, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert (inc.counts.pulled, inc.counts.pushed) == (10, 10)
    assert len(hs.export_tasks()) == 1  # incremental reads search; they never export
    check_destination(world, d, source_records(world, d))
    counts = check_ledger(world, d)
    assert counts["pull.records"] == counts["push.pushed"] == 1_010
