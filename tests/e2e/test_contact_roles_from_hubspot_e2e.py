"""End to end (issue 14): HubSpot deal↔contact associations → Salesforce OpportunityContactRole
records through the real stack (dev server, sandbox CRMs over HTTPS, OAuth, ``db_url``).

A sync from the association stream ``deals/contacts`` into ``OpportunityContactRole`` with
``{"@deals": "OpportunityId", "@contacts": "ContactId"}`` makes each HubSpot pair one contact role
between the Opportunity its deal became and the Contact its contact became
(:mod:`workflows.pair_records`). The pairs run *first*: every pair waits for its deal; the deals sync
lands the Opportunities and queues the pairs again on their contacts; the contacts sync lands those
and creates every role in one Collections create. Re-associations and removals at HubSpot move no
modification date: the next incremental run of the pairs finds them by the sweep
(:mod:`workflows.pair_source`) and creates / deletes exactly those roles. Counts and
(OpportunityId, ContactId) pairs are checked at Salesforce and in lineage.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.demo import _workers
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from tests.e2e.links_support import event_counts, instruction, linked_tenant, seed_hubspot_long_ago
from tests.sync_support import World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAIR_FIELDS = ["id", "@deals", "@contacts"]


async def _tenant(
    world: World, tenant: str, pair_fields: list[str], *, extra: dict[str, str] | None = None
) -> None:
    allowed = {
        "contacts": ["hs_object_id", "email", "firstname", "lastname", "lastmodifieddate"],
        "deals": ["hs_object_id", "dealname", "dealstage", "closedate", "hs_lastmodifieddate"],
        "deals/contacts": pair_fields,
    }
    contacts = {"email": "Email", "firstname": "FirstName", "lastname": "LastName"}
    deals = {"dealname": "Name", "dealstage": "StageName", "closedate": "CloseDate"}
    await linked_tenant(
        world, instruction(tenant, allowed), "hubspot",
        [("contacts", "contacts", "Contact", contacts, "hs_object_id", "External_Id__c"),
         ("deals", "deals", "Opportunity", deals, "hs_object_id", "External_Id__c"),
         ("roles", "deals/contacts", "OpportunityContactRole",
          {"@deals": "OpportunityId", "@contacts": "ContactId", **(extra or {})}, "id", "Id")],
    )  # fmt: skip


def _seed(world: World, deals: int, contacts: int, per_deal: int) -> tuple[list[str], list[str]]:
    """HubSpot deals and contacts created long ago, deal i associated with ``per_deal`` contacts
    (i·per_deal + j mod contacts); returns (deal ids, contact ids)."""
    ids = seed_hubspot_long_ago(world, {"contacts": contacts, "deals": deals})
    deal_ids, contact_ids = ids["deals"], ids["contacts"]
    for i, d in enumerate(deal_ids):
        for j in range(per_deal):
            contact = contact_ids[(i * per_deal + j) % contacts]
            world.hs.associations.associate("deals", d, "contacts", contact, [3])
    return deal_ids, contact_ids


def _roles_at_salesforce(world: World) -> list[tuple[str, str]]:
    """(HubSpot deal id, HubSpot contact id) of every live contact role (a list: twins show)."""
    opp = {r["id"]: r["External_Id__c"] for r in world.sf.live_records("Opportunity")}
    contact = {r["id"]: r["External_Id__c"] for r in world.sf.live_records("Contact")}
    return sorted(
        (opp[r["OpportunityId"]], contact[r["ContactId"]])
        for r in world.sf.live_records("OpportunityContactRole")
    )


def _calls(world: World) -> dict[str, int]:
    counts = {**world.hs.calls.counts(), **world.sf.calls.counts()}
    world.hs.calls.clear()
    world.sf.calls.clear()
    return counts


async def test_deal_contact_associations_become_contact_roles_and_follow_changes(world: World) -> None:
    tenant = "hs-roles"
    hs, sf = world.hs, world.sf
    deals, contacts = _seed(world, 30, 50, 3)
    expected = hs.associations.pairs("deals", "contacts")
    assert len(expected) == 90
    await _tenant(world, tenant, PAIR_FIELDS)
    async with _workers(world.settings):
        _calls(world)
        first = await run_sync(world.connected, world.settings, tenant, "roles")  # pairs first
        assert first.status is SyncStatus.COMPLETED
        assert sf.live_records("OpportunityContactRole") == []
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, "roles") == 90  # none dropped
        assert event_counts(world, tenant, first.run_id, EventKind.PUSH)["deferred"] == 90
        calls = _calls(world)
        assert calls["hs.associations.read"] == 1  # one batch read for the page of 30 deals
        assert not any(k.startswith("sf.collections") for k in calls)  # nothing written yet

        opps = await run_sync(world.connected, world.settings, tenant, "deals")
        assert opps.status is SyncStatus.COMPLETED and opps.counts.pushed == 30
        assert sf.live_records("OpportunityContactRole") == []  # the contacts are not synced yet
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, "roles") == 90  # queued on their contacts
        calls = _calls(world)
        assert (calls["sf.collections_upsert"], calls.get("sf.collections", 0)) == (1, 0)

        people = await run_sync(world.connected, world.settings, tenant, "contacts")
        assert people.status is SyncStatus.COMPLETED and people.counts.pushed == 50
        assert _roles_at_salesforce(world) == sorted(expected)  # 90 roles, one per pair
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, "roles") == 0
        released = event_counts(world, tenant, people.run_id, EventKind.PUSH)
        # 1 Contacts upsert (50 ≤ 200) + 1 Collections create of the 90 roles (≤ 200)
        assert (released["released"], released["link_calls"], released["calls"]) == (90, 1, 2)
        calls = _calls(world)
        assert (calls["sf.collections_upsert"], calls["sf.collections"]) == (1, 1)
        assert all(not r.get("Role") for r in sf.live_records("OpportunityContactRole"))

        # 5 deals re-associate one contact with another and 3 lose one at HubSpot: no modification
        # date moves.
        for d in deals[:5]:
            held = sorted(hs.associations.of("deals", d, "contacts"), key=int)
            assert hs.associations.remove("deals", d, "contacts", held[0])
            new = next(x for x in contacts if x not in held)
            world.hs.associations.associate("deals", d, "contacts", new, [3])
        for d in deals[-3:]:
            held = sorted(hs.associations.of("deals", d, "contacts"), key=int)
            assert hs.associations.remove("deals", d, "contacts", held[0])
        expected = hs.associations.pairs("deals", "contacts")
        assert len(expected) == 87
        inc = await run_sync(world.connected, world.settings, tenant, "roles", SyncMode.INCREMENTAL)
        assert inc.status is SyncStatus.COMPLETED
        assert _roles_at_salesforce(world) == sorted(expected)
        swept = event_counts(world, tenant, inc.run_id, EventKind.PULL)
        assert (swept["links_checked"], swept["links_changed"], swept["link_calls"]) == (30, 13, 1)
        assert (swept["staged"], swept["deleted"]) == (5, 8)
        pushed = event_counts(world, tenant, inc.run_id, EventKind.PUSH)
        assert (pushed["created"], pushed["calls"]) == (5, 2)  # 1 Collections create + 1 delete
        deletes = event_counts(world, tenant, inc.run_id, EventKind.DELETE)
        assert deletes["deleted"] == 8
        calls = _calls(world)
        assert (calls["hs.associations.read"], calls["sf.collections"]) == (1, 2)
        assert "sf.collections_upsert" not in calls

        again = await run_sync(world.connected, world.settings, tenant, "roles", SyncMode.INCREMENTAL)
    assert again.status is SyncStatus.COMPLETED
    assert _roles_at_salesforce(world) == sorted(expected)  # nothing changed: nothing written
    calls = _calls(world)
    assert calls["hs.associations.read"] == 1 and "sf.collections" not in calls


async def test_a_pair_end_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "hs-roles-refused"
    _seed(world, 2, 3, 1)
    await _tenant(world, tenant, PAIR_FIELDS[:-1])  # no @contacts
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, "roles", may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "@contacts" in refused.message and "allowed_fields.deals/contacts" in refused.message
    assert world.sf.live_records("OpportunityContactRole") == []


async def test_a_pair_sync_maps_its_two_ends_and_nothing_else(world: World) -> None:
    tenant = "hs-roles-extra"
    _seed(world, 2, 3, 1)
    await _tenant(world, tenant, PAIR_FIELDS, extra={"id": "Role"})  # a pair has no field to write
    async with _workers(world.settings):
        failed: Any = await run_sync(world.connected, world.settings, tenant, "roles", may_fail=True)
    assert failed.status is SyncStatus.FAILED
    assert "map @deals and @contacts" in failed.message and "nothing else" in failed.message
    assert world.sf.live_records("OpportunityContactRole") == []
