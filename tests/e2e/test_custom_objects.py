"""End to end (issue 14 item 2): custom objects sync like the standard ones through the real stack —
the dev server, the sandbox CRMs over HTTPS, in-process region workers, OAuth connections (HubSpot
granted the custom-object scopes), ``db_url``.

A Salesforce custom object ``Project__c`` (defined in the sandbox org as Setup would) and a HubSpot
custom object ``projects`` (defined through the sandbox's schemas API over HTTPS, objectTypeId
``2-…``) are discovered live, checked by the new-sync check (did-you-mean by name and by
objectTypeId, the instruction's fields, HubSpot's requiredProperties), then synced both ways:
Project__c → projects (upsert by the unique ``project_code``), and back (upsert by the external id
``Code__c``), so the round trip updates the original records and creates only HubSpot's own. A
field outside the instruction never crosses; the HubSpot calls are counted per endpoint."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest

from api.demo import _workers, connect_crm
from connectors.hubspot.objects import CUSTOM_SCOPES
from governance.policy import ProcessingInstruction
from schemas.sync import SyncMode, SyncStatus
from services.sync_setup import NewSyncRefused, SyncSetup
from services.wiring import connector_factory, subprocessor_registry
from store import syncs as sync_store
from tests.api.web.conftest import make_tenant
from tests.connectors.test_hubspot_custom_objects import PROJECTS
from tests.services.test_sync_setup import add_instruction
from tests.sync_support import World, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "custom-objects"
N = 250
# The connector tests' schema, with a property the instruction does not allow.
PROJECTS_SCHEMA = {
    **PROJECTS,
    "properties": [*PROJECTS["properties"], {"name": "internal_notes", "label": "Internal notes"}],
}
PROJECT_FIELDS = [
    {"name": "Code__c", "type": "string", "label": "Code", "length": 32, "external_id": True, "unique": True},
    {"name": "Budget__c", "type": "double", "label": "Budget", "precision": 18, "scale": 0},
    {"name": "Secret_Notes__c", "type": "string", "label": "Secret notes", "length": 255},
]
TO_HS = {"Name": "project_name", "Code__c": "project_code", "Budget__c": "budget"}
TO_SF = {"project_name": "Name", "project_code": "Code__c", "budget": "Budget__c"}


def instruction() -> ProcessingInstruction:
    return ProcessingInstruction.model_validate(
        {
            "tenant": TENANT,
            "version": 1,
            "purpose": "crm-sync",
            "data_categories": ["business_contact"],
            "allowed_fields": {
                "Project__c": ["Id", "Name", "Code__c", "Budget__c", "SystemModstamp"],
                "projects": ["hs_object_id", "project_name", "project_code", "budget", "hs_lastmodifieddate"],
            },
            "retention_days": 7,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"],
            "valid_from": "2025-01-01T00:00:00Z",
        }
    )


def define_hubspot_projects(world: World) -> str:
    """``POST /crm/v3/schemas`` over HTTPS with a private-app token; the objectTypeId."""
    token = world.hs.issue_private_app_token()
    with httpx.Client(verify=world.ca.client_context()) as http:
        answer = http.post(
            f"{world.sandbox.info.hubspot_url}/crm/v3/schemas",
            json=PROJECTS_SCHEMA,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["objectTypeId"])


def spec(ids: dict[str, str], sync_id: str, src: str, dst: str, mapping: dict[str, str], **kw: Any) -> Any:
    crm = {"Project__c": "salesforce", "projects": "hubspot"}
    return sync_store.SyncSpec(
        tenant=TENANT,
        id=sync_id,
        source_connection_id=ids[crm[src]],
        source_stream=src,
        destination_connection_id=ids[crm[dst]],
        destination_stream=dst,
        mapping=mapping,
        instruction_version=1,
        **kw,
    )


def refused(setup: SyncSetup, s: Any) -> str:
    with pytest.raises(NewSyncRefused) as info:
        setup.check(s)
    return info.value.message


async def test_custom_objects_round_trip_both_ways(settings: Any, world: World) -> None:
    world.sf.add_custom_object("Project__c", "Project", "Projects", PROJECT_FIELDS)
    type_id = define_hubspot_projects(world)
    for i in range(N):
        world.sf.create_record(
            "Project__c",
            {"Name": f"Project {i}", "Code__c": f"P-{i:04d}", "Budget__c": 1000 + i, "Secret_Notes__c": "x"},
        )
    engine = world.connected.engine
    make_tenant(engine, TENANT)
    add_instruction(engine, instruction())
    connectors = connector_factory(settings, engine, world.oauth)
    extra = {"salesforce": (), "hubspot": CUSTOM_SCOPES}
    ids = {}
    for crm in ("salesforce", "hubspot"):
        ids[crm] = await asyncio.to_thread(
            connect_crm, world.oauth, TENANT, crm, world.ca, extra_scopes=extra[crm]
        )
        await asyncio.to_thread(connectors.locate, ids[crm])
    setup = SyncSetup(engine, connectors, subprocessor_registry(settings))

    # Discovered live: the streams list custom objects of both CRMs.
    sf_streams = {s.name: s for s in await asyncio.to_thread(setup.streams, TENANT, ids["salesforce"])}
    hs_streams = {s.name: s for s in await asyncio.to_thread(setup.streams, TENANT, ids["hubspot"])}
    assert sf_streams["Project__c"].custom and not sf_streams["Contact"].custom
    assert hs_streams["projects"].custom and hs_streams["projects"].aliases[0] == type_id
    # The check: did-you-mean by name and by objectTypeId, the instruction, required properties.
    keys = {"source_key_property": "Code__c", "destination_id_property": "project_code"}
    to_hs = spec(ids, "projects-to-hubspot", "Project__c", "projects", TO_HS, **keys)
    assert "did you mean projects?" in refused(
        setup, to_hs.model_copy(update={"destination_stream": "project"})
    )
    by_id = refused(setup, to_hs.model_copy(update={"destination_stream": type_id}))
    assert f"'{type_id}'; did you mean projects?" in by_id
    assert "did you mean Project__c?" in refused(
        setup, to_hs.model_copy(update={"source_stream": "Projects__c"})
    )
    secret = refused(
        setup, to_hs.model_copy(update={"mapping": {**TO_HS, "Secret_Notes__c": "internal_notes"}})
    )
    assert "Secret_Notes__c" in secret
    no_name = refused(setup, to_hs.model_copy(update={"mapping": {"Code__c": "project_code"}}))
    assert "project_name" in no_name  # a requiredProperty of the schema must be mapped
    await asyncio.to_thread(setup.create, to_hs)
    keys = {"source_key_property": "project_code", "destination_id_property": "Code__c"}
    back = spec(ids, "projects-to-salesforce", "projects", "Project__c", TO_SF, **keys)
    await asyncio.to_thread(setup.create, back)

    async with _workers(settings):
        world.hs.calls.clear()
        progress = await run_sync(world.connected, settings, TENANT, to_hs.id, SyncMode.FULL)
        assert progress.status is SyncStatus.COMPLETED, progress
        assert (progress.counts.pulled, progress.counts.pushed, progress.counts.failed) == (N, N, 0)
        calls = world.hs.calls.counts()
        assert calls.get("hs.custom.batch.upsert") == math.ceil(N / 100), calls
        stored = {r["project_code"]: r for r in world.hs.live_records("projects")}
        assert len(stored) == N and stored["P-0007"]["budget"] == "1007"
        assert stored["P-0007"]["project_name"] == "Project 7"
        assert not any(r.get("internal_notes") for r in stored.values())  # outside the instruction

        # HubSpot's own projects, then the reverse direction: the originals are updated by Code__c.
        for i in range(5):
            world.hs.create_record(
                "projects",
                {"project_name": f"HS {i}", "project_code": f"H-{i}", "budget": "5", "internal_notes": "n"},
            )
        world.hs.calls.clear()
        progress = await run_sync(world.connected, settings, TENANT, back.id, SyncMode.FULL)
        assert progress.status is SyncStatus.COMPLETED, progress
        assert (progress.counts.pulled, progress.counts.pushed, progress.counts.failed) == (N + 5, N + 5, 0)
        calls = world.hs.calls.counts()
        assert calls.get("hs.custom.list") == math.ceil((N + 5) / 100), calls  # list pages of 100
        sf = {r["Code__c"]: r for r in world.sf.live_records("Project__c")}
        assert (
            len(sf) == N + 5 and sf["H-3"]["Name"] == "HS 3" and sf["P-0007"]["Budget__c"] in (1007, 1007.0)
        )
        assert sf["P-0007"]["Secret_Notes__c"] == "x" and sf["H-3"].get("Secret_Notes__c") is None

        # An incremental run reads the changes only and upserts them.
        # Stamped just after where the full read ended, as if made while it ran (an incremental
        # window ends search_settle_s before the read starts: HubSpot's search index lags writes).
        assert progress.cursor is not None and progress.cursor.isdigit()
        world.hs.store.clock.freeze(int(progress.cursor) + 1)
        try:
            for code in ("P-0001", "P-0002", "P-0003"):
                world.hs.update_record("projects", stored[code]["id"], {"budget": "42"})
        finally:
            world.hs.store.clock.unfreeze()
        world.hs.calls.clear()
        progress = await run_sync(world.connected, settings, TENANT, back.id, SyncMode.INCREMENTAL)
        assert progress.status is SyncStatus.COMPLETED, progress
        assert progress.counts.pushed == 3, progress
        calls = world.hs.calls.counts()
        # one search page for the changes, one archived-list page for deletes, no full list
        assert calls.get("hs.custom.search") == 1 and calls.get("hs.custom.list") == 1, calls
        sf = {r["Code__c"]: r for r in world.sf.live_records("Project__c")}
        assert [sf[c]["Budget__c"] for c in ("P-0001", "P-0002", "P-0003")] in ([42, 42, 42], [42.0] * 3)
