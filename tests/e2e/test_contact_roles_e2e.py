"""End to end (issue 14): Salesforce OpportunityContactRole → HubSpot deal↔contact associations
through the real stack (dev server, sandbox CRMs over HTTPS, OAuth).

A sync of ``OpportunityContactRole`` into the association stream ``deals/contacts`` with
``{"OpportunityId": "@deals", "ContactId": "@contacts"}`` makes each role one association between
the deal its Opportunity became and the contact its Contact became (:mod:`workflows.junctions`).
The roles run *first*: every row waits for its deal; the deals sync lands the deals and queues the
rows again on their contacts; the contacts sync lands those and links all of them in one
associations batch create. The next incremental run carries an edited ``ContactId`` (archive the
old pair, create the new), deleted roles (archive — except a pair another role still holds) and a
changed ``Role`` (nothing to write). Pairs and counts are checked at HubSpot and in lineage.
"""

from __future__ import annotations

from typing import Any

import pytest

from api import reconcileops, syncops
from api.demo import _workers
from governance.pseudonym import Pseudonymizer
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from store import dead_letters as dead_letter_store
from tests.e2e.links_support import event_counts, first_run_fills_the_queue, roles_tenant
from tests.sync_support import World, run_sync
from workflows import junctions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLE_FIELDS = ["Id", "OpportunityId", "ContactId", "Role", "SystemModstamp"]


async def _tenant(
    world: World, tenant: str, role_fields: list[str], *, hidden: tuple[str, ...] = ("Id",)
) -> None:
    await roles_tenant(world, tenant, role_fields, {"OpportunityId": "@deals", "ContactId": "@contacts"},
                       hidden=hidden)  # fmt: skip


def _expected(world: World, tenant: str) -> set[tuple[str, str]]:
    """(HubSpot deal id, HubSpot contact id) each live Salesforce contact role should give."""
    ps = Pseudonymizer(world.connected.vault)
    deal = {r["external_id"]: r["id"] for r in world.hs.live_records("deals")}
    contact = {r["email"]: r["id"] for r in world.hs.live_records("contacts")}
    email = {c["id"]: c["Email"].lower() for c in world.sf.live_records("Contact")}
    return {
        (deal[str(ps.pseudonymize(tenant, r["OpportunityId"]))], contact[email[r["ContactId"]]])
        for r in world.sf.live_records("OpportunityContactRole")
    }


async def _retry_roles(world: World, tenant: str) -> Any:
    """``crmhub sync retry-rejected`` on the roles sync, the CRMs' call counts cleared first."""
    world.hs.calls.clear()
    world.sf.calls.clear()
    handle = await syncops.retry_rejected(
        world.connected.client, tenant, "roles", task_queue=world.settings.temporal.control_task_queue
    )
    return await handle.result()


def _linked_by_one_retry(world: World, tenant: str, pairs: int) -> None:
    """Every role's pair is at HubSpot, no letter is left, the retry read the roles again in one
    query and linked them in one associations batch create."""
    have = world.hs.associations.pairs("deals", "contacts")
    assert len(have) == pairs and have == _expected(world, tenant)
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.list_dead_letters(conn, tenant, "roles") == []
    assert world.hs.calls.counts().get("hs.associations.create") == 1
    assert world.sf.calls.counts().get("sf.query") == 1


async def test_contact_roles_become_deal_contact_associations_and_follow_changes(world: World) -> None:
    tenant = "sf-roles"
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 60})
    contacts = sorted(r["id"] for r in sf.live_records("Contact"))
    opportunities = [
        sf.create_record(
            "Opportunity", {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
        )
        for i in range(40)
    ]
    roles = []  # (role id, opportunity, contact)
    for i, opp in enumerate(opportunities):
        for j in range(3):
            c = contacts[(3 * i + j) % len(contacts)]
            role = sf.create_record(
                "OpportunityContactRole",
                {"OpportunityId": opp, "ContactId": c, "Role": "Decision Maker", "IsPrimary": j == 0},
            )
            roles.append((role, opp, c))
    twin = sf.create_record(  # a second role of one contact on one opportunity: the same pair
        "OpportunityContactRole",
        {"OpportunityId": roles[0][1], "ContactId": roles[0][2], "Role": "Evaluator"},
    )
    await _tenant(world, tenant, ROLE_FIELDS)
    async with _workers(world.settings):
        waiting = await run_sync(world.connected, world.settings, tenant, "roles")  # before both ends
        assert waiting.status is SyncStatus.COMPLETED
        assert (waiting.counts.pushed, waiting.counts.failed) == (0, 0)
        pushed = event_counts(world, tenant, waiting.run_id, EventKind.PUSH)
        assert (pushed["deferred"], pushed.get("link_calls", 0), pushed["calls"]) == (121, 0, 0)

        deals = await run_sync(world.connected, world.settings, tenant, "deals")
        assert deals.status is SyncStatus.COMPLETED and deals.counts.pushed == 40
        again = event_counts(world, tenant, deals.run_id, EventKind.PUSH)
        # The rows now wait on their contacts; no association call yet (1 deals upsert).
        assert (again["deferred"], again.get("released", 0), again["calls"]) == (121, 0, 1)
        assert hs.associations.pairs("deals", "contacts") == set()

        people = await run_sync(world.connected, world.settings, tenant, "contacts")
        assert people.status is SyncStatus.COMPLETED and people.counts.pushed == 60
        released = event_counts(world, tenant, people.run_id, EventKind.PUSH)
        # 1 contacts upsert (60 ≤ 100) + 1 associations batch create (121 ≤ 1,000)
        assert (released["released"], released["link_calls"], released["calls"]) == (121, 1, 2)
        pairs = hs.associations.pairs("deals", "contacts")
        assert len(pairs) == 120 and pairs == _expected(world, tenant)
        d0 = next(iter(pairs))[0]
        assert all(3 in t for t in hs.associations.of("deals", d0, "contacts").values())  # deal→contact
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, "roles") == 0

        # 5 roles point at another contact, 3 are deleted, the twin is deleted, 6 change role only.
        for n, (role, _, _) in enumerate(roles[10:15]):  # contacts no role of these deals has
            sf.update_record("OpportunityContactRole", role, {"ContactId": contacts[30 + n]})
        for role, _, _ in roles[20:23]:
            sf.delete_record("OpportunityContactRole", role)
        sf.delete_record("OpportunityContactRole", twin)
        for role, _, _ in roles[30:36]:
            sf.update_record("OpportunityContactRole", role, {"Role": "Economic Buyer"})
        world.hs.calls.clear()
        moved = await run_sync(world.connected, world.settings, tenant, "roles", SyncMode.INCREMENTAL)
    assert moved.status is SyncStatus.COMPLETED and moved.counts.failed == 0
    pairs = hs.associations.pairs("deals", "contacts")
    assert len(pairs) == 117 and pairs == _expected(world, tenant)  # the twin's pair stays: roles[0] holds it
    counts = event_counts(world, tenant, moved.run_id, EventKind.PUSH)
    assert (counts["linked"], counts["unlinked"]) == (5, 4)
    # 1 batch archive (5 moved + 3 deleted pairs) + 1 batch create (5); the role change costs none
    assert (counts["link_calls"], counts["calls"]) == (2, 2)
    assert world.hs.calls.counts().get("hs.associations.archive") == 1


async def test_a_role_lookup_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "sf-roles-refused"
    world.sf.seed({"Contact": 2})
    opp = world.sf.create_record("Opportunity", {"Name": "D", "StageName": "x", "CloseDate": "2027-03-01"})
    world.sf.create_record(
        "OpportunityContactRole",
        {"OpportunityId": opp, "ContactId": world.sf.live_records("Contact")[0]["id"]},
    )
    await _tenant(world, tenant, ["Id", "OpportunityId", "SystemModstamp"])  # no ContactId
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, "roles", may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "ContactId" in refused.message and "allowed_fields.OpportunityContactRole" in refused.message


async def test_a_full_queue_dead_letters_the_rest_and_the_retry_links_them(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 rows may wait; the other 6 are dead-lettered ``PARENT_NOT_SYNCED`` naming the sync to run
    first. The parents' runs link the 4; ``retry-rejected`` reads the 6 again (one query) and links
    them in one batch create, resolving their letters."""
    tenant = "sf-roles-bound"
    monkeypatch.setattr(junctions, "DEFERRAL_LIMIT", 4)
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 10})
    contacts = sorted(r["id"] for r in sf.live_records("Contact"))
    for i in range(5):
        opp = sf.create_record(
            "Opportunity", {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
        )
        for c in contacts[2 * i : 2 * i + 2]:
            sf.create_record("OpportunityContactRole", {"OpportunityId": opp, "ContactId": c})
    await _tenant(world, tenant, ROLE_FIELDS, hidden=())  # a retry reads a role again by its Id
    async with _workers(world.settings):
        await first_run_fills_the_queue(world, tenant, "roles", 4, 6)
        for parent in ("deals", "contacts"):
            await run_sync(world.connected, world.settings, tenant, parent)
        assert len(hs.associations.pairs("deals", "contacts")) == 4  # the waiting ones, released
        done = await _retry_roles(world, tenant)
    assert done.retried == 6
    _linked_by_one_retry(world, tenant, 10)  # the 6 roles read again in one query


async def test_a_row_refused_in_its_parents_release_is_lettered_on_its_sync_and_retried(world: World) -> None:
    """The roles run first and wait; one deal is deleted at HubSpot before the contacts run, whose
    push releases the 4 rows: 2 link, the 2 on the deleted deal are refused (record does not exist).
    Their letters are the roles sync's (kind upsert, none on the contacts sync); once the deal is
    restored, ``retry-rejected`` on the roles sync reads the 2 again (one query), links them in one
    associations batch create and resolves the letters."""
    tenant = "sf-roles-released"
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 4})
    hs.seed({"deals": 10})  # the synced deals' ids differ from the contacts' (a 207 error names ids)
    contacts = sorted(r["id"] for r in sf.live_records("Contact"))
    opps = []
    for i in range(2):
        opp = sf.create_record(
            "Opportunity", {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
        )
        opps.append(opp)
        for c in contacts[2 * i : 2 * i + 2]:
            sf.create_record("OpportunityContactRole", {"OpportunityId": opp, "ContactId": c})
    await _tenant(world, tenant, ROLE_FIELDS, hidden=())  # a retry reads a role again by its Id
    ps = Pseudonymizer(world.connected.vault)
    async with _workers(world.settings):
        for sync_id in ("roles", "deals"):
            await run_sync(world.connected, world.settings, tenant, sync_id)
        gone = next(
            r["id"]
            for r in hs.live_records("deals")
            if r["external_id"] == str(ps.pseudonymize(tenant, opps[0]))
        )
        assert hs.delete_record("deals", gone)
        released = await run_sync(world.connected, world.settings, tenant, "contacts")
        pushed = event_counts(world, tenant, released.run_id, EventKind.PUSH)
        assert (pushed["released"], pushed["link_failed"]) == (2, 2)
        assert len(hs.associations.pairs("deals", "contacts")) == 2
        with world.connected.engine.connect() as conn:
            letters = dead_letter_store.list_dead_letters(conn, tenant, "roles")
            assert dead_letter_store.list_dead_letters(conn, tenant, "contacts") == []
        assert len(letters) == 2
        assert all((dl.error_message or "").startswith(dead_letter_store.RETRYABLE_PREFIX) for dl in letters)
        assert {dl.run_id for dl in letters} == {released.run_id}  # refused in the contacts run's push
        assert hs.store.set_deleted("deals", gone, False)  # restored at HubSpot
        done = await _retry_roles(world, tenant)
    assert (done.retried, done.retry_resolved, done.retry_gone) == (2, 2, 0)
    _linked_by_one_retry(world, tenant, 4)  # the 2 roles read again in one query


async def test_roles_purged_from_the_recycle_bin_are_unlinked_by_a_reconciliation(world: World) -> None:
    """Roles deleted and purged (the recycle bin emptied) never show as deletes; ``crmhub sync
    reconcile`` lists the live role ids (one query), finds the rows that vanished and archives their
    pairs in one associations batch archive."""
    tenant = "sf-roles-purged"
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 6})
    contacts = sorted(r["id"] for r in sf.live_records("Contact"))
    roles = []
    for i in range(3):
        opp = sf.create_record(
            "Opportunity", {"Name": f"Deal {i}", "StageName": "qualifiedtobuy", "CloseDate": "2027-03-01"}
        )
        roles += [
            sf.create_record("OpportunityContactRole", {"OpportunityId": opp, "ContactId": c})
            for c in contacts[2 * i : 2 * i + 2]
        ]
    await _tenant(world, tenant, ROLE_FIELDS)
    async with _workers(world.settings):
        for sync_id in ("deals", "contacts", "roles"):
            await run_sync(world.connected, world.settings, tenant, sync_id)
        assert len(hs.associations.pairs("deals", "contacts")) == 6
        for role in roles[:2]:
            sf.delete_record("OpportunityContactRole", role)
        sf.empty_recycle_bin("OpportunityContactRole")
        world.hs.calls.clear()
        handle = await reconcileops.start(
            world.connected.client, tenant, "roles", task_queue=world.settings.temporal.control_task_queue
        )
        result = await handle.result()
    assert (result.listed, result.mapped, result.vanished, result.deleted) == (4, 6, 2, 2)
    pairs = hs.associations.pairs("deals", "contacts")
    assert len(pairs) == 4 and pairs == _expected(world, tenant)
    assert world.hs.calls.counts().get("hs.associations.archive") == 1
