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
(OpportunityId, ContactId) pairs are checked at Salesforce and in lineage. Pairs refused for a full
deferral queue are created by ``crmhub sync retry-rejected`` (read again by pair id in one
associations batch read); the roles of a deal purged at HubSpot are deleted by ``crmhub sync
reconcile``.
"""

from __future__ import annotations

from typing import Any

import pytest

from api import reconcileops, syncops
from api.demo import _workers
from governance.lineage import Ledger
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from store import dead_letters as dead_letter_store
from tests.e2e.links_support import (
    event_counts,
    first_run_fills_the_queue,
    instruction,
    linked_tenant,
    seed_hubspot_long_ago,
)
from tests.sync_support import World, run_sync
from workflows import pair_records

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


async def test_pairs_a_full_queue_refused_are_created_by_retry_rejected(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 pairs may wait; the other 6 are dead-lettered ``PARENT_NOT_SYNCED``. The bound drops to 2
    before the deals run: of the 4 released, 2 queue on their contacts and 2 are dead-lettered (their
    letters hold no pair: the retry finds it in the snapshot). The contacts run creates 2 roles; two
    lettered pairs are removed at HubSpot — the retry run's incremental sweep finds them vanished and
    ends their letters; ``retry-rejected`` reads the other 6 again (one associations batch read) and
    creates them in one Collections create."""
    tenant = "hs-roles-bound"
    monkeypatch.setattr(pair_records, "DEFERRAL_LIMIT", 4)
    hs = world.hs
    _seed(world, 5, 10, 2)
    await _tenant(world, tenant, PAIR_FIELDS)
    async with _workers(world.settings):
        first_run = await first_run_fills_the_queue(world, tenant, "roles", 4, 6)
        monkeypatch.setattr(pair_records, "DEFERRAL_LIMIT", 2)
        await run_sync(world.connected, world.settings, tenant, "deals")
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, "roles") == 2
            letters = dead_letter_store.list_dead_letters(conn, tenant, "roles")
        released = [dl for dl in letters if "run sync 'contacts' first" in (dl.error_message or "")]
        assert (len(letters), len(released)) == (8, 2)
        await run_sync(world.connected, world.settings, tenant, "contacts")
        created = _roles_at_salesforce(world)
        assert len(created) == 2  # the ones still waiting, released
        lettered = sorted(hs.associations.pairs("deals", "contacts") - set(created))
        assert len(lettered) == 8
        for d, c in (lettered[0], lettered[-1]):
            assert hs.associations.remove("deals", d, "contacts", c)
        expected = hs.associations.pairs("deals", "contacts")
        _calls(world)
        handle = await syncops.retry_rejected(
            world.connected.client, tenant, "roles", task_queue=world.settings.temporal.control_task_queue
        )
        done = await handle.result()
    assert (done.retried, done.retry_resolved, done.retry_gone) == (6, 6, 0)
    assert (done.created, done.failed) == (6, 0)
    assert _roles_at_salesforce(world) == sorted(expected)  # 8 roles
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.list_dead_letters(conn, tenant, "roles") == []
        assert links_store.count_deferred(conn, tenant, "roles") == 0
    calls = _calls(world)
    # 1 associations read of the sweep (5 deals) + 1 of the retry; 1 Collections create of the 6
    assert (calls["hs.associations.read"], calls["sf.collections"]) == (2, 1)
    assert "sf.collections_upsert" not in calls
    events = Ledger(world.connected.engine, tenant).read_events()
    swept = next(e for e in events if e.kind is EventKind.PUSH and e.counts.get("resolved") == 2)
    assert swept.details.get("step") != "retry"  # the run's own push: the 2 vanished pairs' letters
    retry = [e for e in events if e.details.get("step") == "retry"]
    pulled = next(e for e in retry if e.kind is EventKind.PULL)
    assert (pulled.counts["letters"], pulled.counts["records"], pulled.counts["not_retryable"]) == (6, 6, 0)
    pushed = next(e for e in retry if e.kind is EventKind.PUSH)
    assert (pushed.counts["created"], pushed.counts["retried"], pushed.counts["resolved"]) == (6, 6, 6)
    assert first_run in str(pushed.details["retry_of_runs"]).split(",")  # and the deals run's release


async def test_the_roles_of_a_deal_purged_at_hubspot_are_deleted_by_a_reconciliation(world: World) -> None:
    """A GDPR (permanent) delete of a deal never shows as a delete; ``crmhub sync reconcile`` lists
    the live pairs (a page of deals + one associations batch read) and deletes the vanished pairs'
    roles in one Collections delete — in the default ``upsert`` mode, as the push does."""
    tenant = "hs-roles-purged"
    hs = world.hs
    deals, _ = _seed(world, 6, 12, 2)
    await _tenant(world, tenant, PAIR_FIELDS)
    async with _workers(world.settings):
        for sync_id in ("deals", "contacts", "roles"):
            await run_sync(world.connected, world.settings, tenant, sync_id)
        assert len(_roles_at_salesforce(world)) == 12
        purged = deals[2]
        hs.gdpr_delete("deals", purged)
        _calls(world)
        handle = await reconcileops.start(
            world.connected.client, tenant, "roles", task_queue=world.settings.temporal.control_task_queue
        )
        result = await handle.result()
        assert (result.listed, result.mapped, result.vanished, result.deleted) == (10, 12, 2, 2)
        assert (result.list_calls, result.delete_calls, result.failed) == (2, 1, 0)
        roles = _roles_at_salesforce(world)
        assert len(roles) == 10 and purged not in {d for d, _ in roles}
        calls = _calls(world)
        assert (calls["hs.list.deals"], calls["hs.associations.read"], calls["sf.collections"]) == (1, 1, 1)
        (deletes,) = [
            e.counts for e in Ledger(world.connected.engine, tenant).read_events()
            if e.kind is EventKind.DELETE and e.details.get("reconcile")
        ]  # fmt: skip
        assert (deletes["deleted"], deletes["vanished"], deletes["listed"]) == (2, 2, 10)
        again = await run_sync(world.connected, world.settings, tenant, "roles", SyncMode.INCREMENTAL)
    assert again.status is SyncStatus.COMPLETED
    assert _roles_at_salesforce(world) == roles  # nothing created again
