"""End to end (issue 14): deals ↔ Opportunity with ``Opportunity.AccountId`` ↔ the deal's primary
company, both directions through the real stack (dev server, sandbox CRMs over HTTPS, OAuth).

Salesforce → HubSpot: ``{"AccountId": "@companies"}`` on an Opportunity → deals sync associates
each deal with its account's company (primary deal→company type 5). HubSpot → Salesforce:
``{"@companies": "AccountId"}`` on a deals → Opportunity sync sets each Opportunity's
``AccountId`` from its deal's primary company. Parents first here; pairs and counts checked at the
destination, and the association calls at their batch minimum.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.demo import _workers
from governance.pseudonym import Pseudonymizer
from sandbox.fake import BASE_EPOCH_MS
from schemas.lineage import EventKind
from schemas.sync import SyncStatus
from tests.e2e.links_support import event_counts, instruction, linked_tenant
from tests.sync_support import World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    """A pull activity covers 10 vendor pages (one associations batch read for 1,000 deals)."""
    return {"pages_per_activity": 10, "continue_as_new_after_batches": 3}


async def test_opportunities_become_deals_associated_with_their_account_company(world: World) -> None:
    tenant = "sf-deals"
    sf, hs = world.sf, world.hs
    sf.seed({"Account": 20})
    accounts = sorted(r["id"] for r in sf.live_records("Account"))
    for i in range(250):  # StageName: a HubSpot deal stage (dealstage is an enumeration there)
        sf.create_record(
            "Opportunity",
            {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01",
             "AccountId": accounts[i % len(accounts)]},
        )  # fmt: skip
    allowed = {
        "Account": ["Id", "Name", "SystemModstamp"],
        "Opportunity": ["Id", "Name", "StageName", "AccountId", "SystemModstamp"],
    }
    ins = instruction(tenant, allowed, pseudonymize={"Account": ["Id"], "Opportunity": ["Id"]})
    deals = {"Name": "dealname", "StageName": "dealstage", "AccountId": "@companies"}
    await linked_tenant(
        world, ins, "salesforce",
        [("accounts", "Account", "companies", {"Name": "name"}, "Id", "external_id"),
         ("deals", "Opportunity", "deals", deals, "Id", "external_id")],
    )  # fmt: skip
    async with _workers(world.settings):
        parents = await run_sync(world.connected, world.settings, tenant, "accounts")
        assert parents.status is SyncStatus.COMPLETED and parents.counts.pushed == 20
        children = await run_sync(world.connected, world.settings, tenant, "deals")
    assert children.status is SyncStatus.COMPLETED and children.counts.pushed == 250
    ps = Pseudonymizer(world.connected.vault)
    company = {r["external_id"]: r["id"] for r in hs.live_records("companies")}
    deal = {r["external_id"]: r["id"] for r in hs.live_records("deals")}
    expected = {
        (deal[str(ps.pseudonymize(tenant, o["id"]))], company[str(ps.pseudonymize(tenant, o["AccountId"]))])
        for o in sf.live_records("Opportunity")
    }
    pairs = hs.associations.pairs("deals", "companies")
    assert len(pairs) == 250 and pairs == expected
    d0 = next(iter(deal.values()))
    assert all(5 in t for t in hs.associations.of("deals", d0, "companies").values())  # the primary type
    pushed = event_counts(world, tenant, children.run_id, EventKind.PUSH)
    # 3 deals upserts (100 a call) + 1 associations batch create (250 ≤ 1,000)
    assert (pushed["linked"], pushed["link_calls"], pushed["calls"]) == (250, 1, 4)


async def test_deals_become_opportunities_with_their_company_account(world: World) -> None:
    tenant = "hs-deals"
    sf, hs = world.sf, world.hs
    hs.store.clock.freeze(BASE_EPOCH_MS + 86_400_000)
    try:
        hs.seed({"companies": 12, "deals": 300})
    finally:
        hs.store.clock.unfreeze()
    companies = sorted((r["id"] for r in hs.live_records("companies")), key=int)
    parent = {}
    for n, d in enumerate(sorted((r["id"] for r in hs.live_records("deals")), key=int)):
        if n % 10:  # every tenth deal has no company: its Opportunity has no AccountId
            parent[d] = companies[n % len(companies)]
            hs.associations.associate("deals", d, "companies", parent[d], [5])
    allowed = {
        "companies": ["hs_object_id", "name", "hs_lastmodifieddate"],
        "deals": ["hs_object_id", "dealname", "dealstage", "closedate", "hs_lastmodifieddate", "@companies"],
    }
    deals = {
        "dealname": "Name",
        "dealstage": "StageName",
        "closedate": "CloseDate",
        "@companies": "AccountId",
    }
    await linked_tenant(
        world, instruction(tenant, allowed), "hubspot",
        [("companies", "companies", "Account", {"name": "Name"}, "hs_object_id", "External_Id__c"),
         ("deals", "deals", "Opportunity", deals, "hs_object_id", "External_Id__c")],
    )  # fmt: skip
    world.hs.calls.clear()
    async with _workers(world.settings):
        first = await run_sync(world.connected, world.settings, tenant, "companies")
        assert first.status is SyncStatus.COMPLETED and first.counts.pushed == 12
        children = await run_sync(world.connected, world.settings, tenant, "deals")
    assert children.status is SyncStatus.COMPLETED
    assert (children.counts.pushed, children.counts.failed) == (300, 0)
    account = {r["id"]: r["External_Id__c"] for r in sf.live_records("Account")}
    opportunities = sf.live_records("Opportunity")
    assert len(opportunities) == 300
    pairs = {(o["External_Id__c"], account[o["AccountId"]]) for o in opportunities if o.get("AccountId")}
    assert len(pairs) == 270 and pairs == set(parent.items())
    pulled = event_counts(world, tenant, children.run_id, EventKind.PULL)
    assert (pulled["links_read"], pulled["link_calls"]) == (300, 1)
    assert world.hs.calls.counts()["hs.associations.read"] == 1
    pushed = event_counts(world, tenant, children.run_id, EventKind.PUSH)
    assert pushed["calls"] == 2  # AccountId rides on the 2 upserts (200 a call); no link call
    assert "deferred" not in pushed
