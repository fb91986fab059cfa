"""End to end (issue 14): relationships through the real stack — the dev server, the sandbox CRMs
over HTTPS, in-process region workers, OAuth connections, ``db_url``.

Salesforce Accounts → HubSpot companies and Salesforce Contacts → HubSpot contacts, the contacts
sync declaring ``{"AccountId": "@companies"}``. The contacts sync runs *first*: every contact lands,
none can be associated yet, all wait in the deferral queue (counted in lineage); the accounts sync
then lands the companies and releases them — every contact associated with its account's company
(count and pairs checked at HubSpot) in one associations batch create. Re-parented contacts move on
the next incremental run (one batch archive + one batch create). An instruction that does not allow
``AccountId`` refuses the plan.
"""

from __future__ import annotations

from typing import Any

import pytest

from api import syncops
from api.demo import _workers
from governance.pseudonym import Pseudonymizer
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from store import dead_letters as dead_letter_store
from tests.e2e.links_support import event_counts, instruction, linked_tenant
from tests.sync_support import Direction, World, check_ledger, run_sync
from workflows import associations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNTS, CONTACTS = "accounts", "contacts"


async def _tenant(world: World, tenant: str, contact_fields: list[str]) -> None:
    """Tenant, both CRMs connected, the instruction, the accounts and the contacts syncs."""
    allowed = {"Account": ["Id", "Name", "SystemModstamp"], "Contact": contact_fields}
    ins = instruction(tenant, allowed, pseudonymize={"Account": ["Id"]})
    contacts = {"Email": "email", "FirstName": "firstname", "LastName": "lastname", "AccountId": "@companies"}
    await linked_tenant(
        world, ins, "salesforce",
        [(ACCOUNTS, "Account", "companies", {"Name": "name"}, "Id", "external_id"),
         (CONTACTS, "Contact", "contacts", contacts, "Email", "email")],
    )  # fmt: skip


def _expected_pairs(world: World, tenant: str) -> set[tuple[str, str]]:
    """(HubSpot contact id, HubSpot company id) each Salesforce contact's account should give."""
    ps = Pseudonymizer(world.connected.vault)
    company = {r["external_id"]: r["id"] for r in world.hs.live_records("companies")}
    contact = {r["email"]: r["id"] for r in world.hs.live_records("contacts")}
    out = set()
    for c in world.sf.live_records("Contact"):
        out.add((contact[c["Email"].lower()], company[str(ps.pseudonymize(tenant, c["AccountId"]))]))
    return out


def _push_counts(world: World, tenant: str, run_id: str | None) -> dict[str, int]:
    """The push events' counts of one run, summed."""
    return event_counts(world, tenant, run_id, EventKind.PUSH)


async def test_contacts_wait_for_their_companies_then_follow_a_reparenting(world: World) -> None:
    tenant = "sf-assoc"
    sf, hs = world.sf, world.hs
    sf.seed({"Account": 40, "Contact": 600})
    await _tenant(world, tenant, ["Id", "Email", "FirstName", "LastName", "AccountId", "SystemModstamp"])
    async with _workers(world.settings):
        first = await run_sync(world.connected, world.settings, tenant, CONTACTS)  # children first
        assert first.status is SyncStatus.COMPLETED
        assert (first.counts.pushed, first.counts.failed) == (600, 0)
        assert hs.associations.pairs("contacts", "companies") == set()
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 600  # none dropped
        pushed = _push_counts(world, tenant, first.run_id)
        assert (pushed["deferred"], pushed.get("linked", 0), pushed["calls"]) == (
            600,
            0,
            6,
        )  # 6 upserts of 100

        parents = await run_sync(world.connected, world.settings, tenant, ACCOUNTS)
        assert parents.status is SyncStatus.COMPLETED and parents.counts.pushed == 40
        pairs = hs.associations.pairs("contacts", "companies")
        assert len(pairs) == 600
        assert pairs == _expected_pairs(world, tenant)
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 0
        released = _push_counts(world, tenant, parents.run_id)
        # 1 companies upsert (40 ≤ 100) + 1 associations batch create (600 ≤ 1,000)
        assert (released["released"], released["link_calls"], released["calls"]) == (600, 1, 2)

        # Re-parent 10 contacts (a Salesforce lookup change bumps SystemModstamp): they move.
        accounts = sorted(r["id"] for r in sf.live_records("Account"))
        moved = sorted(sf.live_records("Contact"), key=lambda r: r["id"])[:10]
        for c in moved:
            new = next(a for a in accounts if a != c["AccountId"])
            sf.update_record("Contact", c["id"], {"AccountId": new})
        inc = await run_sync(world.connected, world.settings, tenant, CONTACTS, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED and inc.counts.pushed == 10
    pairs = hs.associations.pairs("contacts", "companies")
    assert len(pairs) == 600  # moved, not added: each contact keeps exactly one company
    assert pairs == _expected_pairs(world, tenant)
    moved_counts = _push_counts(world, tenant, inc.run_id)
    # 1 contacts upsert + 1 associations batch archive + 1 associations batch create
    assert (moved_counts["linked"], moved_counts["link_calls"], moved_counts["calls"]) == (10, 2, 3)
    for c in moved:
        contact_id = next(r["id"] for r in hs.live_records("contacts") if r["email"] == c["Email"].lower())
        assert len(hs.associations.of("contacts", contact_id, "companies")) == 1
    d = Direction(
        tenant, "salesforce", "Contact", "hubspot", "contacts", {}, "Email", "email", "SystemModstamp"
    )
    assert check_ledger(world, d)["push.released"] == 600  # the ledger verifies offline


async def test_a_lookup_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "sf-assoc-refused"
    world.sf.seed({"Account": 2, "Contact": 5})
    await _tenant(world, tenant, ["Id", "Email", "FirstName", "LastName", "SystemModstamp"])  # no AccountId
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, CONTACTS, may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "AccountId" in refused.message and "allowed_fields.Contact" in refused.message
    assert world.hs.live_records("contacts") == []


async def test_a_full_deferral_queue_dead_letters_the_rest_naming_the_parent_sync(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = "sf-assoc-bound"
    monkeypatch.setattr(associations, "DEFERRAL_LIMIT", 5)
    world.sf.seed({"Account": 3, "Contact": 20})
    await _tenant(world, tenant, ["Id", "Email", "FirstName", "LastName", "AccountId", "SystemModstamp"])
    async with _workers(world.settings):
        first = await run_sync(world.connected, world.settings, tenant, CONTACTS)
        assert (first.counts.pushed, first.counts.failed) == (20, 0)  # the contacts themselves land
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 5
            letters = dead_letter_store.list_dead_letters(conn, tenant, CONTACTS)
        assert [dl.error_code for dl in letters] == ["PARENT_NOT_SYNCED"] * 15
        assert all(f"run sync {ACCOUNTS!r} first" in dl.error_message for dl in letters)
        pushed = _push_counts(world, tenant, first.run_id)
        assert (pushed["deferred"], pushed["link_failed"]) == (5, 15)  # none silently dropped
        again = await run_sync(world.connected, world.settings, tenant, CONTACTS)  # pushed again, full
        with world.connected.engine.connect() as conn:  # the waiting ones keep their place
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 5
        assert event_counts(world, tenant, again.run_id, EventKind.PUSH)["deferred"] == 5
        await run_sync(world.connected, world.settings, tenant, ACCOUNTS)
        assert len(world.hs.associations.pairs("contacts", "companies")) == 5  # the waiting ones, released
        # The 15 letters stand for their records' upserts: retry-rejected reads them again (one query)
        # and links them now that their companies are there (one associations batch create).
        assert all((dl.error_message or "").startswith(dead_letter_store.RETRYABLE_PREFIX) for dl in letters)
        world.hs.calls.clear()
        world.sf.calls.clear()
        handle = await syncops.retry_rejected(
            world.connected.client, tenant, CONTACTS, task_queue=world.settings.temporal.control_task_queue
        )
        done = await handle.result()
    assert (done.retried, done.retry_resolved, done.retry_gone) == (15, 15, 0)
    pairs = world.hs.associations.pairs("contacts", "companies")
    assert len(pairs) == 20 and pairs == _expected_pairs(world, tenant)
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.list_dead_letters(conn, tenant, CONTACTS) == []
    assert world.hs.calls.counts().get("hs.associations.create") == 1
    assert world.sf.calls.counts().get("sf.query") == 1


async def test_a_child_refused_in_its_parents_release_is_lettered_on_its_sync_and_retried(
    world: World,
) -> None:
    """The contacts run first and wait; one contact is deleted at HubSpot before the accounts run,
    whose push releases the 4: 3 link, the deleted one is refused (record does not exist). Its
    letter is the contacts sync's (kind upsert, none on the accounts sync); once the contact is
    restored, ``retry-rejected`` on the contacts sync reads it again (one query), upserts it and
    links it (one associations batch create), resolving the letter."""
    tenant = "sf-assoc-released"
    sf, hs = world.sf, world.hs
    sf.seed({"Account": 2, "Contact": 4})
    hs.seed({"companies": 10})  # the companies' ids differ from the contacts' (a 207 error names ids)
    accounts = sorted(r["id"] for r in sf.live_records("Account"))
    people = sorted(sf.live_records("Contact"), key=lambda r: r["id"])
    for n, c in enumerate(people):  # the refused one alone on its company (an error names both ends)
        sf.update_record("Contact", c["id"], {"AccountId": accounts[0 if n == 0 else 1]})
    await _tenant(world, tenant, ["Id", "Email", "FirstName", "LastName", "AccountId", "SystemModstamp"])
    async with _workers(world.settings):
        await run_sync(world.connected, world.settings, tenant, CONTACTS)  # children first: all wait
        email = people[0]["Email"].lower()
        gone = next(r["id"] for r in hs.live_records("contacts") if r["email"] == email)
        assert hs.delete_record("contacts", gone)
        parents = await run_sync(world.connected, world.settings, tenant, ACCOUNTS)
        released = _push_counts(world, tenant, parents.run_id)
        assert (released["released"], released["link_failed"]) == (3, 1)
        with world.connected.engine.connect() as conn:
            letters = dead_letter_store.list_dead_letters(conn, tenant, CONTACTS)
            assert dead_letter_store.list_dead_letters(conn, tenant, ACCOUNTS) == []
        assert len(letters) == 1 and letters[0].run_id == parents.run_id
        assert (letters[0].error_message or "").startswith(dead_letter_store.RETRYABLE_PREFIX)
        assert hs.store.set_deleted("contacts", gone, False)  # restored at HubSpot
        hs.calls.clear()
        sf.calls.clear()
        handle = await syncops.retry_rejected(
            world.connected.client, tenant, CONTACTS, task_queue=world.settings.temporal.control_task_queue
        )
        done = await handle.result()
    assert (done.retried, done.retry_resolved, done.retry_gone) == (1, 1, 0)
    pairs = hs.associations.pairs("contacts", "companies")
    assert len(pairs) == 4 and pairs == _expected_pairs(world, tenant)
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.list_dead_letters(conn, tenant, CONTACTS) == []
    assert hs.calls.counts().get("hs.associations.create") == 1
    assert sf.calls.counts().get("sf.query") == 1  # the contact read again in one query
