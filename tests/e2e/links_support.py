"""Shared set-up of the relationship end-to-end tests (issue 14): a tenant with both CRMs connected
over OAuth, one instruction, and syncs of one direction; the summed counts of a run's events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from api.demo import connect_crm
from governance.lineage import Ledger
from governance.policy import ProcessingInstruction
from sandbox.fake import BASE_EPOCH_MS
from schemas.lineage import EventKind
from store import associations as links_store
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from tests.sync_support import ENDPOINT, World, run_sync

__all__ = ["event_counts", "instruction", "linked_tenant", "roles_tenant", "seed_hubspot_long_ago"]

# (sync id, source stream, destination stream, mapping, source key property, destination id property)
SyncRow = tuple[str, str, str, dict[str, str], str, str]


async def roles_tenant(
    world: World, tenant: str, role_fields: list[str], roles_mapping: dict[str, str],
    *, hidden: tuple[str, ...] = ("Id",),
) -> None:  # fmt: skip
    """Salesforce → HubSpot: Contact → contacts, Opportunity → deals (by its pseudonymized Id) and
    ``OpportunityContactRole`` → the association stream ``deals/contacts`` (sync ``roles``) with
    ``roles_mapping``, the role fields ``role_fields`` allowed and ``hidden`` pseudonymized."""
    allowed = {
        "Contact": ["Id", "Email", "LastName", "SystemModstamp"],
        "Opportunity": ["Id", "Name", "StageName", "SystemModstamp"],
        "OpportunityContactRole": role_fields,
    }
    ins = instruction(
        tenant, allowed, pseudonymize={"Opportunity": ["Id"], "OpportunityContactRole": list(hidden)}
    )
    deals = {"Name": "dealname", "StageName": "dealstage"}
    await linked_tenant(
        world, ins, "salesforce",
        [("contacts", "Contact", "contacts", {"Email": "email", "LastName": "lastname"}, "Email", "email"),
         ("deals", "Opportunity", "deals", deals, "Id", "external_id"),
         ("roles", "OpportunityContactRole", "deals/contacts", roles_mapping, "Id", "external_id")],
    )  # fmt: skip


def instruction(tenant: str, allowed: dict[str, list[str]], **extra: Any) -> ProcessingInstruction:
    """Version 1 of the tenant's instruction: purpose crm-sync, EEA, both vendors, ``allowed``."""
    return ProcessingInstruction.model_validate(
        {
            "tenant": tenant, "version": 1, "purpose": "crm-sync",
            "data_categories": ["contact_details", "business_contact"], "allowed_fields": allowed,
            "retention_days": 7, "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"], "valid_from": "2025-01-01T00:00:00Z",
            **extra,
        }
    )  # fmt: skip


async def linked_tenant(
    world: World, ins: ProcessingInstruction, source: str, syncs: Sequence[SyncRow]
) -> None:
    """Tenant ``ins.tenant`` with both CRMs connected, ``ins`` and ``syncs`` from ``source`` to the
    other CRM."""
    tenant = ins.tenant
    conns = {
        crm: await asyncio.to_thread(connect_crm, world.oauth, tenant, crm, world.ca)
        for crm in ("salesforce", "hubspot")
    }
    destination = "hubspot" if source == "salesforce" else "salesforce"
    now = datetime.now(UTC)
    with world.connected.engine.begin() as conn:
        tenant_store.create_tenant(conn, id=tenant, name=f"{tenant} GmbH", home_region="eea",
                                   authorised_subprocessors=["salesforce", "hubspot"], now=now)  # fmt: skip
        instruction_store.add_instruction(conn, tenant=tenant, version=1, content=ins.model_dump(mode="json"),
                                          content_hash=ins.content_hash, now=now)  # fmt: skip
        for id, src, dst, mapping, key, dst_id in syncs:
            spec = sync_store.SyncSpec(
                tenant=tenant, id=id, source_connection_id=conns[source], source_stream=src,
                source_endpoint=ENDPOINT[source], destination_connection_id=conns[destination],
                destination_stream=dst, destination_endpoint=ENDPOINT[destination], mapping=mapping,
                destination_id_property=dst_id, source_key_property=key, instruction_version=1,
            )  # fmt: skip
            sync_store.create_sync(conn, spec, now=now)


def event_counts(world: World, tenant: str, run_id: str | None, kind: EventKind) -> dict[str, int]:
    """The counts of one run's events of ``kind``, summed."""
    out: dict[str, int] = {}
    for e in Ledger(world.connected.engine, tenant).read_events(run_id=run_id):
        if e.kind is kind:
            for k, v in e.counts.items():
                out[k] = out.get(k, 0) + v
    return out


def seed_hubspot_long_ago(world: World, counts: dict[str, int]) -> dict[str, list[str]]:
    """HubSpot records created a day after the sandbox's epoch (before any run's cursor); returns
    each stream's ids in creation order."""
    hs = world.hs
    hs.store.clock.freeze(BASE_EPOCH_MS + 86_400_000)
    try:
        hs.seed(counts)
    finally:
        hs.store.clock.unfreeze()
    return {stream: sorted((r["id"] for r in hs.live_records(stream)), key=int) for stream in counts}


async def first_run_fills_the_queue(
    world: World, tenant: str, sync_id: str, waiting: int, lettered: int
) -> str:
    """Run the relationship sync ``sync_id`` before its parents with a deferral bound of ``waiting``:
    nothing pushed, ``waiting`` rows queued and ``lettered`` dead-lettered ``PARENT_NOT_SYNCED``
    naming the deals sync to run first; returns the run id."""
    first = await run_sync(world.connected, world.settings, tenant, sync_id)
    assert (first.counts.pushed, first.counts.failed) == (0, lettered)
    with world.connected.engine.connect() as conn:
        assert links_store.count_deferred(conn, tenant, sync_id) == waiting
        letters = dead_letter_store.list_dead_letters(conn, tenant, sync_id)
    assert [dl.error_code for dl in letters] == ["PARENT_NOT_SYNCED"] * lettered
    assert all("run sync 'deals' first" in (dl.error_message or "") for dl in letters)
    assert first.run_id is not None
    return first.run_id
