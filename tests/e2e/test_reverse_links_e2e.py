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

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from api.demo import _workers, connect_crm
from governance.lineage import Ledger
from governance.policy import ProcessingInstruction
from sandbox.fake import BASE_EPOCH_MS
from schemas.lineage import EventKind
from schemas.sync import SyncMode, SyncStatus
from store import associations as links_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from tests.sync_support import ENDPOINT, World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPANIES, CONTACTS = "companies", "contacts"
CONTACT_FIELDS = ["hs_object_id", "email", "firstname", "lastname", "lastmodifieddate", "@companies"]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    """A pull activity covers 10 HubSpot pages (1,000 records: one associations batch read)."""
    return {"pages_per_activity": 10, "continue_as_new_after_batches": 3}


def _instruction(tenant: str, contact_fields: list[str]) -> ProcessingInstruction:
    return ProcessingInstruction.model_validate(
        {
            "tenant": tenant, "version": 1, "purpose": "crm-sync",
            "data_categories": ["contact_details", "business_contact"],
            "allowed_fields": {"companies": ["hs_object_id", "name", "hs_lastmodifieddate"],
                               "contacts": contact_fields},
            "retention_days": 7, "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"], "valid_from": "2025-01-01T00:00:00Z",
        }
    )  # fmt: skip


async def _tenant(world: World, tenant: str, contact_fields: list[str]) -> None:
    """Tenant, both CRMs connected, the instruction, the companies and the contacts syncs."""
    conns = {
        crm: await asyncio.to_thread(connect_crm, world.oauth, tenant, crm, world.ca)
        for crm in ("salesforce", "hubspot")
    }
    ins = _instruction(tenant, contact_fields)
    now = datetime.now(UTC)

    def spec(id: str, src: str, dst: str, mapping: dict[str, str]) -> sync_store.SyncSpec:
        return sync_store.SyncSpec(
            tenant=tenant, id=id, source_connection_id=conns["hubspot"], source_stream=src,
            source_endpoint=ENDPOINT["hubspot"], destination_connection_id=conns["salesforce"],
            destination_stream=dst, destination_endpoint=ENDPOINT["salesforce"], mapping=mapping,
            destination_id_property="External_Id__c", source_key_property="hs_object_id",
            instruction_version=1,
        )  # fmt: skip

    with world.connected.engine.begin() as conn:
        tenant_store.create_tenant(conn, id=tenant, name=f"{tenant} GmbH", home_region="eea",
                                   authorised_subprocessors=["salesforce", "hubspot"], now=now)  # fmt: skip
        instruction_store.add_instruction(conn, tenant=tenant, version=1, content=ins.model_dump(mode="json"),
                                          content_hash=ins.content_hash, now=now)  # fmt: skip
        sync_store.create_sync(conn, spec(COMPANIES, "companies", "Account", {"name": "Name"}), now=now)
        contacts = {"email": "Email", "firstname": "FirstName", "lastname": "LastName"}
        contacts["@companies"] = "AccountId"  # the relationship, read at HubSpot
        sync_store.create_sync(conn, spec(CONTACTS, "contacts", "Contact", contacts), now=now)


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


def _counts(world: World, tenant: str, run_id: str | None, kind: EventKind) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in Ledger(world.connected.engine, tenant).read_events(run_id=run_id):
        if e.kind is kind:
            for k, v in e.counts.items():
                out[k] = out.get(k, 0) + v
    return out


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
        pulled = _counts(world, tenant, first.run_id, EventKind.PULL)
        assert (pulled["links_read"], pulled["link_calls"]) == (500, 1)  # one batch read for 500
        assert _calls(world)["hs.associations.read"] == 1
        assert _counts(world, tenant, first.run_id, EventKind.PUSH)["deferred"] == 500

        parents = await run_sync(world.connected, world.settings, tenant, COMPANIES)
        assert parents.status is SyncStatus.COMPLETED and parents.counts.pushed == 30
        expected = set(parent.items())
        assert len(_pairs_at_salesforce(world)) == 500
        assert _pairs_at_salesforce(world) == expected
        with world.connected.engine.connect() as conn:
            assert links_store.count_deferred(conn, tenant, CONTACTS) == 0
        released = _counts(world, tenant, parents.run_id, EventKind.PUSH)
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
        swept = _counts(world, tenant, inc.run_id, EventKind.PULL)
        assert (swept["links_checked"], swept["links_changed"], swept["link_calls"]) == (500, 10, 1)
        relinked = _counts(world, tenant, inc.run_id, EventKind.PUSH)
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
    assert _counts(world, tenant, late.run_id, EventKind.PUSH)["released"] == 1


async def test_a_relationship_the_instruction_does_not_allow_refuses_the_plan(world: World) -> None:
    tenant = "hs-assoc-refused"
    _seed(world, 2, 5)
    await _tenant(world, tenant, CONTACT_FIELDS[:-1])  # no @companies
    async with _workers(world.settings):
        refused: Any = await run_sync(world.connected, world.settings, tenant, CONTACTS, may_fail=True)
    assert refused.status is SyncStatus.REFUSED
    assert "@companies" in refused.message and "allowed_fields.contacts" in refused.message
    assert world.sf.live_records("Contact") == []
