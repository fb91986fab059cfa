"""Issue 18 (data-subject rights beyond export/erase), end to end on the real stack (dev server,
sandbox CRMs over HTTPS, in-process workers, the database of ``db_url``): after a Salesforce →
HubSpot sync, one subject restricts the processing and one is erased, both with ``--propagate``; the
next *full* sync brings neither back (their records are dropped at read time and only counted as
``suppressed`` in the pull event, never named), and neither is at HubSpot. A third subject's
rectification reaches HubSpot through the sync's instruction (the pseudonymized Phone arrives as a
pseudonym) and mapping. The ledger the auditor fetches through the audit API verifies offline with
``crmhub audit verify`` and holds the restrict, erase and rectify events and the suppressed count.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.audit import AuditServices, router
from api.audit.reports import lineage_report
from api.cli import app as cli_app
from api.cli_dsr import run_dsr
from api.demo import _workers
from governance.lineage import CheckpointSigner
from governance.registry import load_registry
from schemas.dsr import DsrKind
from schemas.lineage import EventKind, LineageEvent
from schemas.sync import SyncMode, SyncStatus
from services.wiring import default_subprocessors_file
from store import auditors
from store import suppressions as suppression_store
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "rights"
CONTACTS = 40


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Account": 4, "Contact": CONTACTS}}


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


async def test_restricted_and_erased_subjects_stay_out_and_a_rectification_reaches_the_destination(
    settings, sandbox, demo, tmp_path
) -> None:
    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    contacts = sorted(sf.live_records("Contact"), key=lambda r: r["id"])
    restricted, erased, rectified = contacts[3], contacts[7], contacts[11]
    async with _workers(settings):
        assert (await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)).status is SyncStatus.COMPLETED
        emails = {r["email"] for r in hs.live_records("contacts")}
        assert {restricted["Email"], erased["Email"], rectified["Email"]} <= emails

        r, _ = await run_dsr(
            settings, TENANT, DsrKind.RESTRICT, email=restricted["Email"], ids=[], propagate=True
        )
        assert (r.suppressed, r.id_map_rows) == (1, 1)
        assert [(d.records, d.deleted, d.failed) for d in r.destinations] == [(1, 1, 0)]
        e, _ = await run_dsr(settings, TENANT, DsrKind.ERASE, email=erased["Email"], ids=[], propagate=True)
        assert (e.suppressed, e.id_map_rows) == (1, 1)
        with demo.engine.connect() as conn:
            assert suppression_store.count_suppressions(conn, TENANT) == {"restrict": 1, "erase": 1}
        gone = {restricted["Email"], erased["Email"]}
        assert not gone & {c["email"] for c in hs.live_records("contacts")}

        # -- the next full sync: neither comes back; the suppression is counted, not named ----------
        again = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
        assert again.status is SyncStatus.COMPLETED
        at_hubspot = hs.live_records("contacts")
        assert not gone & {c["email"] for c in at_hubspot}
        assert len(at_hubspot) == CONTACTS - 2
        report = lineage_report(demo.engine, TENANT)
        runs = [x for x in report["runs"] if x["sync_id"] == SYNC]
        second = runs[-1]["counts"]
        assert (second["suppressed"], second["pulled"], second["pushed"]) == (2, CONTACTS - 2, CONTACTS - 2)

        # -- rectification: corrected values pushed through the instruction and mapping ---------------
        corrections = {"LastName": "Corrected-Name", "Phone": "+44 20 7946 0000", "Birthdate": "1970-01-01"}
        fixed, _ = await run_dsr(
            settings, TENANT, DsrKind.RECTIFY, email=rectified["Email"], ids=[], corrections=corrections
        )
        assert [(d.records, d.rectified, d.failed) for d in fixed.destinations] == [(1, 1, 0)]
        assert any("Birthdate not in its instruction" in n for n in fixed.notes)
        (row,) = [c for c in hs.live_records("contacts") if c["email"] == rectified["Email"]]
        assert row["lastname"] == "Corrected-Name"
        assert row["phone"].startswith("ps_") and "7946" not in json.dumps(row)
        assert "birthdate" not in row or row.get("birthdate") != "1970-01-01"

    # -- the auditor's ledger, verified offline, holds the outcomes --------------------------------
    with demo.engine.begin() as conn:
        _, token = auditors.create_token(conn, tenant=TENANT, name="rights auditor", now=datetime.now(UTC))
    signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
    web = FastAPI()
    web.include_router(router, prefix="/audit")
    web.state.audit_services = AuditServices(demo.engine, load_registry(default_subprocessors_file()))
    client = TestClient(web)
    ledger_file = tmp_path / "ledger.json"
    ledger_file.write_bytes(
        client.get("/audit/integrity/ledger", headers={"Authorization": f"Bearer {token}"}).content
    )
    key_file = tmp_path / "crmhub.pub.pem"
    key_file.write_text(signer.public_key_pem())
    verified = CliRunner().invoke(
        cli_app, ["audit", "verify", str(ledger_file), "--public-key", str(key_file)]
    )
    assert verified.exit_code == 0, verified.output
    events = [LineageEvent.from_canonical(x["event"]) for x in json.loads(ledger_file.read_text())["entries"]]
    by_kind = {
        k: [ev for ev in events if ev.kind is k]
        for k in (EventKind.RESTRICT, EventKind.ERASE, EventKind.RECTIFY)
    }
    (restrict,) = by_kind[EventKind.RESTRICT]
    assert (
        restrict.counts["suppressed"] == 1
        and restrict.details["reason"] == "data-subject restriction request"
    )
    assert by_kind[EventKind.ERASE][0].counts["suppressed"] == 1
    (rectify,) = by_kind[EventKind.RECTIFY]
    assert (
        rectify.counts["destination_rectified"] == 1
        and rectify.details["fields"] == "Birthdate,LastName,Phone"
    )
    pulls = [ev for ev in events if ev.kind is EventKind.PULL and ev.counts.get("suppressed")]
    assert sum(ev.counts["suppressed"] for ev in pulls) == 2
    # the suppression is a count: the suppressed subjects' keys are not named by those pulls
    suppressed_keys = set(restrict.record_id_hashes) | set(by_kind[EventKind.ERASE][0].record_id_hashes)
    assert not suppressed_keys & {k for ev in pulls for k in ev.record_id_hashes}
    text = ledger_file.read_text()
    assert restricted["Email"] not in text and "Corrected-Name" not in text
