"""End to end (issue 14): relationships read at the source — HubSpot companies + contacts →
Salesforce Accounts + Contacts, each contact's ``AccountId`` set from its HubSpot primary company
(associations v4 batch read), through the real stack: the dev server, the sandbox CRMs over HTTPS,
in-process region workers, OAuth connections, ``db_url``.

The contacts sync declares ``{"@companies": "AccountId"}`` and runs *first*: every contact lands
without an account and waits in the deferral queue; the companies sync then lands the accounts and
sets the waiting contacts' ``AccountId`` (Collections update, 200 a call) — count and pairs checked
at Salesforce. Contacts re-parented at HubSpot (an association change moves no modification date)
move on the next incremental run, found by the association sweep. An instruction that does not
allow ``@companies`` refuses the plan.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.demo import _workers
from sandbox.fake import BASE_EPOCH_MS
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from tests.e2e.links_support import event_counts, instruction, linked_tenant
from tests.sync_support import World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPANIES, CONTACTS = "companies", "contacts"
CONTACT_FIELDS = ["hs_object_id", "email", "firstname", "lastname", "lastmodifieddate", "@companies"]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    """A pull activity covers 10 HubSpot pages (1,000 records: one associations batch read)."""
    return {"pages_per_activity": 10, "continue_as_new_after_batches": 3}


async def _tenant(world: World, tenant: str, contact_fields: list[str]) -> None:
    """Tenant, both CRMs connected, the instruction, the companies and the contacts syncs."""
    allowed = {"companies": ["hs_object_id", "name", "hs_lastmodifieddate"], "contacts": contact_fields}
    contacts = {"email": "Email", "firstname": "FirstName", "lastname": "LastName"}
    contacts["@companies"] = "AccountId"  # the relationship, read at HubSpot
    await linked_tenant(
        world, instruction(tenant, allowed), "hubspot",
        [(COMPANIES, "companies", "Account", {"name": "Name"}, "hs_object_id", "External_Id__c"),
         (CONTACTS, "contacts", "Contact", contacts, "hs_object_id", "External_Id__c")],
    )  # fmt: skip


def _seed(world: World, companies: int, contacts: int) -> dict[str, str]:
    """HubSpot companies and contacts, created long ago, each contact's primary company set
    round-robin; returns contact id → company id."""
    hs = world.hs
    hs.store.clock.freeze(BASE_EPOCH_MS + 86_400_000)
    try:
        hs.seed({"companies": companies, "contacts": contacts})
    finally:
        hs.store.clock.unfreeze()
    company_ids = sorted((r["id"] for r in hs.live_records("companies")), key=int)
    parent = {}
    for n, c in enumerate(sorted((r["id"] for r in hs.live_records("contacts")), key=int)):
        parent[c] = company_ids[n % len(company_ids)]
        hs.associations.associate("contacts", c, "companies", parent[c], [1])
    return parent


def _pairs_at_salesforce(world: World) -> set[tuple[str, str]]:
    """(HubSpot contact id, HubSpot company id) of every Salesforce contact with an account."""
    account = {r["id"]: r["External_Id__c"] for r in world.sf.live_records("Account")}
    return {
        (c["External_Id__c"], account[c["AccountId"]])
        for c in world.sf.live_records("Contact")
        if c.get("AccountId")
    }


def _calls(world: World) -> dict[str, int]:
    counts = {**world.hs.calls.counts(), **world.sf.calls.counts()}
    world.hs.calls.clear()
    world.sf.calls.clear()
    return counts


async def test_contacts_get_their_account_from_hubspot_associations_and_follow_a_reparenting(
    world: World,
) -> None:
    tenant = "hs-assoc"
    hs, sf = world.hs, world.sf
    parent = _seed(world, 30, 500)
    await _tenant(world, tenant, CONTACT_FIELDS)
    async with _workers(world.settings):
        _calls(world)
        first = await run_sync(world.connected, world.settings, tenant, CONTACTS)  # children first
        assert first.status is SyncStatus.COMPLETED
        assert (first.counts.pushed, first.counts.failed) == (500, 0)
        assert len(sf.live_records("Contact")) == 500 and _pairs_at_salesforce(world) == set()
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 500  # none dropped
        pulled = event_counts(world, tenant, first.run_id, EventKind.PULL)
        assert (pulled["links_read"], pulled["link_calls"]) == (500, 1)  # one batch read for 500
        assert _calls(world)["hs.associations.read"] == 1
        assert event_counts(world, tenant, first.run_id, EventKind.PUSH)["deferred"] == 500

        parents = await run_sync(world.connected, world.settings, tenant, COMPANIES)
        assert parents.status is SyncStatus.COMPLETED and parents.counts.pushed == 30
        expected = set(parent.items())
        assert len(_pairs_at_salesforce(world)) == 500
        assert _pairs_at_salesforce(world) == expected
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 0
        released = event_counts(world, tenant, parents.run_id, EventKind.PUSH)
        # 1 Accounts upsert (30 ≤ 200) + 3 Contact updates setting AccountId (500 / 200)
        assert (released["released"], released["link_calls"], released["calls"]) == (500, 3, 4)
        calls = _calls(world)
        assert (calls["sf.collections_upsert"], calls["sf.collections"]) == (1, 3)

        # Re-parent 10 contacts at HubSpot: the primary company moves, no modification date does.
        companies = sorted(parent.values(), key=int)
        moved = sorted(parent, key=int)[:10]
        for c in moved:
            parent[c] = next(co for co in companies if co != parent[c])
            hs.associations.associate("contacts", c, "companies", parent[c], [1])
        inc = await run_sync(world.connected, world.settings, tenant, CONTACTS, SyncMode.INCREMENTAL)
        assert inc.status is SyncStatus.COMPLETED and inc.counts.pushed == 0  # no contact was modified
        assert _pairs_at_salesforce(world) == set(parent.items())  # moved, each contact one account
        swept = event_counts(world, tenant, inc.run_id, EventKind.PULL)
        assert (swept["links_checked"], swept["links_changed"], swept["link_calls"]) == (500, 10, 1)
        relinked = event_counts(world, tenant, inc.run_id, EventKind.PUSH)
        assert (relinked["linked"], relinked["link_calls"], relinked["calls"]) == (10, 1, 1)
        calls = _calls(world)
        assert (calls["hs.associations.read"], calls["sf.collections"]) == (1, 1)
        assert "sf.collections_upsert" not in calls  # relinks are no upserts

        # Re-parented to a company not synced yet: unlinked now, waits, linked by the companies run.
        assert parents.cursor is not None and parents.cursor.isdigit()
        hs.store.clock.freeze(int(parents.cursor) + 1)  # as if made while the companies read ran
        try:
            newco = hs.create_record("companies", {"name": "Newco SE"})
        finally:
            hs.store.clock.unfreeze()
        child = moved[0]
        hs.associations.associate("contacts", child, "companies", newco, [1])
        waits = await run_sync(world.connected, world.settings, tenant, CONTACTS, SyncMode.INCREMENTAL)
        assert waits.status is SyncStatus.COMPLETED
        assert (child, parent[child]) not in _pairs_at_salesforce(world)
        assert len(_pairs_at_salesforce(world)) == 499
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 1
        late = await run_sync(world.connected, world.settings, tenant, COMPANIES, SyncMode.INCREMENTAL)
    assert late.status is SyncStatus.COMPLETED and late.counts.pushed == 1
    parent[child] = newco
    assert _pairs_at_salesforce(world) == set(parent.items())
    assert event_counts(world, tenant, late.run_id, EventKind.PUSH)["released"] == 1


async def test_a_relationship_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "hs-assoc-refused"
    _seed(world, 2, 5)
    await _tenant(world, tenant, CONTACT_FIELDS[:-1])  # no @companies
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, CONTACTS, may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "@companies" in refused.message and "allowed_fields.contacts" in refused.message
    assert world.sf.live_records("Contact") == []
