"""Schema drift mid-sync (issue 7, scenario 6): while a full sync runs, the source's admin retypes a
synced number field to text and writes text into it, renames a synced field, adds a field and
deletes another — through the sandbox control API (``POST /__sandbox/schema/{obj}``), both
directions (Salesforce → HubSpot and HubSpot → Salesforce), on the real dev server, the sandbox CRMs
over HTTPS on loopback and the database of ``db_url``.

The changes land at a seeded count of records at the destination. Checked: the run completes;
every record whose value no longer fits its planned type is quarantined (sealed, with a reason that
names field, planned and observed type but never the value) and not pushed; the destination holds
no field outside the instruction; pulled = pushed + failed + quarantined in progress and in the
auditor's lineage report (filtered 0); each schema change is reported once (lineage ``drift``
events and progress); the ledger verifies offline. Then the next run is refused (a read field
changed type under the same instruction) until the controller re-issues the instruction; after
that and a mapping fixed for the fields that are gone, a record corrected at the source flows.

Reduced (CI): 2,000 contacts per direction. Full (``CRMHUB_CHAOS_FULL=1``): 20,000.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from api import syncops
from api.audit.reports import lineage_report
from api.demo import _workers
from governance.lineage import Ledger
from sandbox.runtime import RunningSandbox
from schemas.lineage import EventKind
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import syncs as sync_store
from tests.chaos.support import size
from tests.sync_support import Direction, World, check_ledger, create_sync

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

RECORDS = size(2_000, 20_000)
HELD = 25  # records given a text value in the retyped number field
SEED = 11
BAD_WORDS = ("twelve", "a dozen", "n/a", "lots", "unknown")


@dataclass(frozen=True, kw_only=True)
class DriftDirection(Direction):
    """A contacts direction and the schema changes its source's admin makes mid-run."""

    number_field: str  # retyped to text mid-run
    renamed: tuple[str, str]  # mapped field renamed mid-run (old, new)
    dropped: str  # mapped field deleted mid-run
    added: tuple[str, str]  # field added mid-run (name, type), never in the instruction
    planned_number_type: str
    data_categories: tuple[str, ...] = ("contact_details",)


SF_TO_HS = DriftDirection(
    tenant="drift-sf",
    source="salesforce",
    source_stream="Contact",
    destination="hubspot",
    destination_stream="contacts",
    mapping={
        "Email": "email",
        "FirstName": "firstname",
        "LastName": "lastname",
        "Lead_Score__c": "lead_score",
        "Title": "jobtitle",
        "Phone": "phone",
    },
    source_key="Email",
    destination_id="email",
    cursor_field="SystemModstamp",
    number_field="Lead_Score__c",
    renamed=("Title", "Job_Title__c"),
    dropped="Phone",
    added=("Shoe_Size__c", "double"),
    planned_number_type="double",
)
HS_TO_SF = DriftDirection(
    tenant="drift-hs",
    source="hubspot",
    source_stream="contacts",
    destination="salesforce",
    destination_stream="Contact",
    mapping={
        "email": "Email",
        "firstname": "FirstName",
        "lastname": "LastName",
        "lead_score": "Lead_Score__c",
        "jobtitle": "Title",
        "phone": "Phone",
    },
    source_key="hs_object_id",
    destination_id="External_Id__c",
    cursor_field="lastmodifieddate",
    number_field="lead_score",
    renamed=("jobtitle", "job_title"),
    dropped="phone",
    added=("shoe_size", "number"),
    planned_number_type="number",
)


@pytest.fixture
def worker_options() -> dict[str, Any]:
    # Small pulls (200 records, one page) so the run spans many activities and the drift lands mid-run.
    return {"pages_per_activity": 1, "records_per_batch": 200, "continue_as_new_after_batches": 4}


class Control:
    """The sandbox control API of one CRM, over HTTPS on loopback."""

    def __init__(self, crm: Any, ca_path: str) -> None:
        self.http = httpx.Client(
            base_url=crm.base_url,
            verify=ssl.create_default_context(cafile=ca_path),
            headers={"Authorization": f"Bearer {crm.control_token}"},
        )

    def schema(self, obj: str, **change: str) -> dict[str, Any]:
        r = self.http.post(f"/__sandbox/schema/{obj}", json=change)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def patch(self, obj: str, id: str, fields: dict[str, Any]) -> None:
        r = self.http.patch(f"/__sandbox/records/{obj}/{id}", json={"fields": fields})
        assert r.status_code == 204, r.text


def _drift(d: DriftDirection, control: Control, crm: Any, rng: random.Random) -> dict[str, str]:
    """The admin's changes; returns record id → the text now in the retyped number field."""
    control.schema(d.source_stream, change="retype", field=d.number_field, type="string")
    ids = sorted((r["id"] for r in crm.live_records(d.source_stream)), key=lambda i: (len(i), i))
    held = rng.sample(ids[-len(ids) // 10 :], HELD)  # not yet read by the list-ordered HubSpot read
    texts = {rid: f"{rng.choice(BAD_WORDS)} {i}" for i, rid in enumerate(held)}
    for rid, text in texts.items():
        control.patch(d.source_stream, rid, {d.number_field: text})
    control.schema(d.source_stream, change="rename", field=d.renamed[0], to=d.renamed[1])
    control.schema(d.source_stream, change="add", field=d.added[0], type=d.added[1])
    for rid in held[:5]:
        control.patch(d.source_stream, rid, {d.added[0]: 42})
    control.schema(d.source_stream, change="drop", field=d.dropped)
    return texts


@pytest.mark.parametrize("d", [SF_TO_HS, HS_TO_SF], ids=["salesforce-to-hubspot", "hubspot-to-salesforce"])
async def test_schema_drift_mid_sync_quarantines_retyped_values(
    d: DriftDirection, settings: Settings, sandbox: RunningSandbox, world: World
) -> None:
    await create_sync(world, d)
    src, dst = world.crm(d.source), world.crm(d.destination)
    src.seed({"Account": 5, "Contact": RECORDS} if d.source == "salesforce" else {"contacts": RECORDS})
    control = Control(src, sandbox.info.ca_path)
    rng = random.Random(SEED)
    at = rng.randrange(RECORDS // 5, RECORDS // 3)  # seeded: records landed when the admin acts
    try:
        async with _workers(settings):
            h = await syncops.start(
                world.connected.client, d.tenant, d.sync_id, mode=SyncMode.FULL,
                task_queue=settings.temporal.control_task_queue,
            )  # fmt: skip
            done = asyncio.ensure_future(h.result())
            while len(dst.live_records(d.destination_stream)) < at:
                assert not done.done(), "the run ended before the schema changed"
                await asyncio.sleep(0.02)
            texts = await asyncio.to_thread(_drift, d, control, src, rng)
            await asyncio.wait_for(done, timeout=300)
            full = await syncops.progress(world.connected.client, d.tenant, d.sync_id)
            assert full is not None

            # -- the run under drift
            assert full.status is SyncStatus.COMPLETED, full.message
            c = full.counts
            assert c.quarantined == HELD
            assert c.pulled == c.pushed + c.failed + c.quarantined
            with world.connected.engine.connect() as conn:
                held = dead_letter_store.list_quarantined(conn, d.tenant, d.sync_id, run_id=full.run_id)
            assert len(held) == HELD
            want = f"{d.number_field}: planned type {d.planned_number_type}, observed text"
            for letter in held:
                assert letter.error_code == dead_letter_store.QUARANTINED
                assert want in letter.error_message, letter.error_message
                assert not any(t in letter.error_message for t in texts.values())
                assert not any(t.encode() in letter.sealed_record for t in texts.values())  # sealed
            dest = dst.live_records(d.destination_stream)
            outside = {k for r in dest for k in r if k != "id"} - d.allowed_at_destination()
            assert not outside, f"fields outside the instruction reached the destination: {outside}"
            landed = {str(r.get(d.mapping[d.number_field])) for r in dest}
            assert not landed & set(texts.values()), "a quarantined value reached the destination"

            events = Ledger(world.connected.engine, d.tenant).read_events(run_id=full.run_id)
            drift_events = [e for e in events if e.kind is EventKind.DRIFT]
            reported = [line for e in drift_events for line in str(e.details["changes"]).split(" | ")]
            expected = {
                f"retyped {d.number_field}: {d.planned_number_type} → string",
                f"dropped {d.renamed[0]}",
                f"added {d.renamed[1]} (string)",
                f"added {d.added[0]} ({d.added[1]})",
                f"dropped {d.dropped}",
            }
            assert expected <= set(reported), reported
            assert len(reported) == len(set(reported)), f"a change was reported twice: {reported}"
            assert expected <= set(full.drift)
            assert sum(e.counts["records"] for e in events if e.kind is EventKind.QUARANTINE) == HELD

            report = lineage_report(world.connected.engine, d.tenant)
            (run,) = [r for r in report["runs"] if r["run_id"] == full.run_id]
            rc = run["counts"]
            assert (rc["pulled"], rc["quarantined"], rc["filtered"]) == (c.pulled, HELD, 0)
            assert rc["pulled"] == rc["pushed"] + rc["failed"] + rc["quarantined"] + rc["filtered"]
            assert expected <= set(run["schema_drift"])

            # -- the next run: refused while the retyped field is read under the same instruction
            refused = await world.run(d, SyncMode.INCREMENTAL, may_fail=True)
            assert refused.status is SyncStatus.REFUSED
            assert d.number_field in refused.message and "re-issue the instruction" in refused.message

            # -- the controller re-issues the instruction (v2); the mapping drops the gone fields;
            # a quarantined record corrected at the source flows with the next incremental run
            ins = d.instruction(version=2)
            mapping = {k: v for k, v in d.mapping.items() if k not in (d.renamed[0], d.dropped)}
            with world.connected.engine.begin() as conn:
                instruction_store.add_instruction(
                    conn, tenant=d.tenant, version=2, content=ins.model_dump(mode="json"),
                    content_hash=ins.content_hash, now=datetime.now(UTC),
                )  # fmt: skip
                sync_store.set_sync_instruction(conn, d.tenant, d.sync_id, 2, now=datetime.now(UTC))
                conn.execute(
                    update(sync_store.syncs)
                    .where(sync_store.syncs.c.tenant == d.tenant, sync_store.syncs.c.id == d.sync_id)
                    .values(mapping=mapping)
                )
            fixed = next(iter(texts))
            if d.source == "hubspot":  # stamped just after the full read's position (search index lag)
                assert full.cursor is not None and full.cursor.isdigit()
                src.store.clock.freeze(int(full.cursor) + 1)
            try:
                await asyncio.to_thread(control.patch, d.source_stream, fixed, {d.number_field: "13"})
            finally:
                src.store.clock.unfreeze()
            after = await world.run(d, SyncMode.INCREMENTAL, may_fail=True)
            assert after.status is SyncStatus.COMPLETED, after.message
            assert after.counts.quarantined == 0 and after.counts.pushed >= 1
            key = _source_key(src, d, fixed)
            rows = [r for r in dst.live_records(d.destination_stream) if str(r.get(d.destination_id)) == key]
            assert len(rows) == 1 and str(rows[0].get(d.mapping[d.number_field])) in ("13", "13.0")

        check_ledger(world, d)  # verifies offline
    finally:
        control.http.close()


def _source_key(crm: Any, d: DriftDirection, rid: str) -> str:
    """The destination id property's value of source record ``rid`` (its key field)."""
    if d.source_key in ("hs_object_id", "Id"):
        return rid
    (row,) = [r for r in crm.live_records(d.source_stream) if r["id"] == rid]
    return str(row[d.source_key]).lower()
