"""Issue 6 acceptance, end to end on the real stack (dev server, sandbox CRMs over HTTPS, in-process
workers, the database of ``db_url``): after a real Salesforce → HubSpot sync, the auditor's lineage
report reconciles exactly with the sandbox (records at the destination = pushed; pulled = pushed +
failed + filtered, failed = dead letters) and the signed ledger report fetched through the audit API
with an auditor token verifies offline with ``crmhub audit verify``. Then a data-subject export finds
the subject's trail, an erase with ``--propagate`` deletes them at HubSpot, and a search afterwards
finds nothing held by crmhub.
"""

from __future__ import annotations

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
from schemas.sync import SyncMode, SyncStatus
from services.wiring import default_subprocessors_file
from store import auditors
from store import dead_letters as dead_letter_store
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "audited"
CONTACTS = 300
NO_EMAIL = 3  # contacts without the upsert key: dead-lettered MISSING_EXTERNAL_ID


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Account": 10, "Contact": CONTACTS}}


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


async def test_auditor_report_reconciles_verifies_offline_and_dsr_erases(
    settings, sandbox, demo, tmp_path
) -> None:
    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    ids = sorted(r["id"] for r in sf.live_records("Contact"))
    for cid in ids[:NO_EMAIL]:
        sf.update_record("Contact", cid, {"Email": None})
    subject = next(r for r in sf.live_records("Contact") if r["id"] == ids[10])
    async with _workers(settings):
        progress = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
        assert progress.status is SyncStatus.COMPLETED

        # -- the auditor's report reconciles with the sandbox -------------------------------------
        destination = hs.live_records("contacts")
        report = lineage_report(demo.engine, TENANT)
        (run,) = [r for r in report["runs"] if r["sync_id"] == SYNC]
        c = run["counts"]
        assert run["status"] == "completed"
        assert c["pulled"] == CONTACTS
        assert c["pushed"] == len(destination) == CONTACTS - NO_EMAIL
        assert c["failed"] == NO_EMAIL
        with demo.engine.connect() as conn:
            assert dead_letter_store.count_dead_letters(conn, TENANT, SYNC) == NO_EMAIL
        assert c["pulled"] == c["pushed"] + c["failed"] + c["filtered"]
        assert c["filtered"] == 0
        assert run["purposes"] == ["crm-sync"] and run["instruction_versions"] == [1]
        assert any(d.endswith("/contacts") for d in run["datasets"]["destinations"])

        # -- through the audit API with a token; verified offline by the CLI ------------------------
        with demo.engine.begin() as conn:
            _, token = auditors.create_token(conn, tenant=TENANT, name="e2e auditor", now=datetime.now(UTC))
        signer = CheckpointSigner.load_or_create(settings.data_dir / settings.governance.signing_key_file)
        web = FastAPI()
        web.include_router(router, prefix="/audit")
        web.state.audit_services = AuditServices(demo.engine, load_registry(default_subprocessors_file()))
        client = TestClient(web)
        auth = {"Authorization": f"Bearer {token}"}
        api_report = client.get("/audit/lineage", headers=auth).json()
        assert [r["counts"] for r in api_report["runs"]] == [r["counts"] for r in report["runs"]]
        ledger_file = tmp_path / "ledger.json"
        ledger_file.write_bytes(client.get("/audit/integrity/ledger", headers=auth).content)
        key_file = tmp_path / "crmhub.pub.pem"
        key_file.write_text(signer.public_key_pem())
        verified = CliRunner().invoke(
            cli_app, ["audit", "verify", str(ledger_file), "--public-key", str(key_file)]
        )
        assert verified.exit_code == 0, verified.output
        assert "verified" in verified.output

        # -- data-subject export: the trail of one person ------------------------------------------
        result, export = await run_dsr(
            settings, TENANT, DsrKind.EXPORT, email=subject["Email"].upper(), ids=[]
        )
        assert export is not None
        assert result.source_records == 1 and result.id_map_rows == 1
        assert [(d.connector, d.stream, d.records) for d in result.destinations] == [
            ("hubspot", "contacts", 1)
        ]
        kinds = {t["kind"] for t in export["lineage_trace"]}
        assert {"pull", "push"} <= kinds
        assert export["source_records"][0]["id"] == subject["id"]
        hs_id = export["held_by_crmhub"]["id_map"][0]["destination_id"]
        assert any(r["id"] == hs_id and r["email"] == subject["Email"] for r in destination)

        # -- erase with --propagate, then nothing is held --------------------------------------------
        erased, _ = await run_dsr(
            settings, TENANT, DsrKind.ERASE, email=subject["Email"], ids=[], propagate=True
        )
        assert erased.id_map_rows == 1
        assert [(d.records, d.deleted, d.failed) for d in erased.destinations] == [(1, 1, 0)]
        assert subject["Email"] not in {r["email"] for r in hs.live_records("contacts")}
        after, export_after = await run_dsr(settings, TENANT, DsrKind.EXPORT, email=subject["Email"], ids=[])
    assert after.held == 0 and after.destinations == []
    assert export_after is not None and export_after["held_by_crmhub"]["id_map"] == []
    erase_events = [t for t in export_after["lineage_trace"] if t["kind"] == "erase"]
    assert len(erase_events) == 1
    # The ledger with the DSR events still verifies (each request signs a checkpoint).
    ledger_file.write_bytes(client.get("/audit/integrity/ledger", headers=auth).content)
    verified = CliRunner().invoke(
        cli_app, ["audit", "verify", str(ledger_file), "--public-key", str(key_file)]
    )
    assert verified.exit_code == 0, verified.output
