"""End to end (issue 17): a customer's first sync with every optional field left at its default runs
to completion — the real dev server, the sandbox CRMs over HTTPS, in-process region workers, OAuth
connections, ``db_url``. The connections learn where their data lives at connect (as ``crmhub
connect``, the web callback and the demo's ``connect_crm`` do: :meth:`ConnectionConnectors.locate`),
the sync is created through the new-sync check with the mapping editor's suggestion (no endpoint, no
name, the suggested keys), and its run is not refused for want of a region: it pushes every contact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.demo import _workers, connect_crm, demo_instruction
from schemas.sync import SyncMode, SyncStatus
from services.sync_setup import SyncSetup
from services.wiring import connector_factory, subprocessor_registry
from store import connections as connection_store
from store import syncs as sync_store
from tests.api.web.conftest import make_tenant
from tests.services.test_sync_setup import add_instruction
from tests.sync_support import World, run_sync

pytestmark = pytest.mark.integration

TENANT = "firstsync"
CONTACTS = 40


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": CONTACTS}}


async def test_a_sync_left_at_its_defaults_runs_to_completion(settings: Any, world: World) -> None:
    engine = world.connected.engine
    make_tenant(engine, TENANT)  # EEA, Salesforce and HubSpot authorised
    add_instruction(engine, demo_instruction(TENANT))
    connectors = connector_factory(settings, engine, world.oauth)
    ids = {}
    for crm in ("salesforce", "hubspot"):
        ids[crm] = await asyncio.to_thread(connect_crm, world.oauth, TENANT, crm, world.ca)  # + locate
    with engine.connect() as conn:
        stored = {
            c.provider: c.region_instance for c in connection_store.list_connections(conn, tenant=TENANT)
        }
    assert stored == {"salesforce": "eu", "hubspot": "eu1"}

    setup = SyncSetup(engine, connectors, subprocessor_registry(settings))
    draft = await asyncio.to_thread(
        setup.draft, TENANT, 1, (ids["salesforce"], "Contact"), (ids["hubspot"], "contacts")
    )
    assert draft.source_key == "Email" and draft.destination_id == "email"
    spec = sync_store.SyncSpec(  # what the form posts when the user changes nothing
        tenant=TENANT,
        id="contact-to-hubspot",
        source_connection_id=ids["salesforce"],
        source_stream="Contact",
        destination_connection_id=ids["hubspot"],
        destination_stream="contacts",
        mapping=draft.suggested(),
        source_key_property=draft.source_key,
        destination_id_property=draft.destination_id,
        instruction_version=1,
    )
    assert spec.source_endpoint is None and spec.destination_endpoint is None and spec.name == ""
    await asyncio.to_thread(setup.create, spec)

    async with _workers(settings):
        progress = await run_sync(world.connected, settings, TENANT, spec.id, SyncMode.FULL)
    assert progress.status is SyncStatus.COMPLETED, progress
    assert (progress.counts.pulled, progress.counts.pushed, progress.counts.failed) == (CONTACTS, CONTACTS, 0)
    emails = {str(r.get("email")) for r in world.hs.live_records("contacts")}
    sources = {str(r.get("Email")) for r in world.sf.live_records("Contact")}
    assert emails == sources and len(emails) == CONTACTS
