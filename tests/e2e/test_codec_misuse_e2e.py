"""Issue 18 item 3, the codec-token misuse signal end to end on the real stack (dev server, sandbox
CRMs over HTTPS, in-process workers, the database of ``db_url``, a local aiosmtpd relay): ``alpha``
and ``beta`` sync; an ops token decodes alpha's real workflow history through the codec server (a
``codec_decode`` access event in alpha's ledger), then presents itself for another namespace;
``crmhub incident check-codec`` opens one ``codec_token_misuse`` incident over alpha only, with its
12 subjects counted by keyed hash from lineage; a second check finds the same incident; notify
reaches alpha's controller; the token's secret is nowhere in the incident, the ledger or the output;
alpha's signed ledger report verifies offline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from typer.testing import CliRunner, Result

from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from sandbox.runtime import RunningSandbox
from schemas.lineage import EventKind
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from services import notices
from services.access_ledger import settings_signer
from tests.notice_support import SmtpServer, drill_settings
from tests.stack import connect_demo_tenant
from tests.sync_support import run_sync
from workers.client import Connected
from workers.codec_access import DecodeLedger
from workers.codec_server import CodecServerSettings, create_codec_app, parse_tokens

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALPHA, BETA = "alpha", "beta"
SYNC = "contacts"
CONTACTS = 12
SECRET = "night-shift-secret-6c1f0a9e2b7d4e58"


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": CONTACTS}}


async def crmhub(*args: str) -> Result:
    """``crmhub ARGS`` in-process (its own event loop, on a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def _history_payloads(connected: Connected, workflow_id: str) -> list[Payload]:
    """The encoded payloads of a workflow's history as the Temporal UI fetches them: inputs and results."""
    history = await connected.client.get_workflow_handle(workflow_id).fetch_history()
    out: list[Payload] = []
    for e in history.events:
        if e.HasField("workflow_execution_started_event_attributes"):
            out.extend(e.workflow_execution_started_event_attributes.input.payloads)
        if e.HasField("activity_task_scheduled_event_attributes"):
            out.extend(e.activity_task_scheduled_event_attributes.input.payloads)
        if e.HasField("activity_task_completed_event_attributes"):
            out.extend(e.activity_task_completed_event_attributes.result.payloads)
    return out


async def test_a_misused_codec_token_opens_one_incident_over_the_tenant_it_decoded(
    settings: Settings, sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = SmtpServer()
    smtp.start()
    drill = drill_settings(settings, smtp, monkeypatch)
    connected: dict[str, Connected] = {}
    try:
        for tenant in (ALPHA, BETA):
            connected[tenant] = await connect_demo_tenant(drill, sandbox, tenant, SYNC)
        engine, vault = connected[ALPHA].engine, connected[ALPHA].vault
        notices.add_contact(engine, vault, ALPHA, label="dpo", email="dpo@alpha.example")
        namespace = drill.temporal.namespace
        codec = TestClient(
            create_codec_app(
                CodecServerSettings(tokens=parse_tokens(f"night-shift:{SECRET}:{namespace}")), vault,
                decode_ledger=DecodeLedger(engine, signer=settings_signer(drill)),
            )
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}

        async with _workers(drill):
            for tenant in (ALPHA, BETA):
                progress = await run_sync(connected[tenant], drill, tenant, SYNC, SyncMode.FULL)
                assert progress.status is SyncStatus.COMPLETED

            quiet = await crmhub("incident", "check-codec")
            assert quiet.exit_code == 0 and "no codec token misused" in quiet.output

            # -- the token reads alpha's history in the UI, then asks for another namespace ---------
            payloads = await _history_payloads(connected[ALPHA], f"sync:{ALPHA}:{SYNC}")
            assert len(payloads) > 3
            body = json_format.MessageToJson(Payloads(payloads=payloads))
            read = codec.post("/decode", content=body, headers={**headers, "X-Namespace": namespace})
            assert read.status_code == 200
            decoded = [e for e in Ledger(engine, ALPHA).read_events() if e.kind is EventKind.ACCESS]
            assert [e.details["actor"] for e in decoded] == ["codec:night-shift"]
            assert not [e for e in Ledger(engine, BETA).read_events() if e.kind is EventKind.ACCESS]
            for _ in range(3):
                probe = codec.post(
                    "/decode", content=body, headers={**headers, "X-Namespace": "crmhub-billing"}
                )
                assert probe.status_code == 403

            # -- the check opens one incident over alpha, scoped from lineage -----------------------
            first = await crmhub("incident", "check-codec")
            assert first.exit_code == 1, first.output
            assert "codec token night-shift misused" in first.output
            assert "wrong_namespace: 3 requests named another namespace" in first.output
            assert "opened incident inc-" in first.output and "(tenants alpha)" in first.output
            incident_id = first.output.split("opened incident ")[1].split()[0]
            second = await crmhub("incident", "check-codec")
            assert second.exit_code == 1 and f"already open: incident {incident_id}" in second.output

            shown = await crmhub("incident", "show", incident_id, "--json")
            doc: dict[str, Any] = json.loads(shown.output)
            assert doc["signal"] == "codec_token_misuse" and doc["nature"] == "unauthorized_access"
            got = {p["tenant"]: (p["subjects"], p["subjects_basis"], p["records"]) for p in doc["tenants"]}
            assert got == {ALPHA: (CONTACTS, "keyed_hashes", CONTACTS)}

            notified = await crmhub("incident", "notify", incident_id)
            assert notified.exit_code == 0, notified.output
            for _ in range(300):
                if smtp.handler.messages:
                    break
                await asyncio.sleep(0.1)
        assert smtp.handler.recipients == ["dpo@alpha.example"]

        # -- no secret anywhere; alpha's ledger has the steps once and verifies offline -------------
        steps = [
            e.details["step"] for e in Ledger(engine, ALPHA).read_events() if e.kind is EventKind.INCIDENT
        ]  # fmt: skip
        assert steps == ["became_aware", "notified"]
        assert not [e for e in Ledger(engine, BETA).read_events() if e.kind is EventKind.INCIDENT]
        ledger_file = tmp_path / "alpha-ledger.json"
        exported = await crmhub(
            "audit", "report", "--tenant", ALPHA, "--kind", "ledger", "-o", str(ledger_file)
        )
        assert exported.exit_code == 0, exported.output
        key_file = tmp_path / "crmhub.pub.pem"
        key_file.write_text((await crmhub("audit", "public-key")).output)
        verified = await crmhub("audit", "verify", str(ledger_file), "--public-key", str(key_file))
        assert verified.exit_code == 0, verified.output
        said = first.output + second.output + shown.output + ledger_file.read_text()
        said += "".join(bytes(m.get_payload(decode=True)).decode() for m in smtp.handler.messages)
        assert SECRET not in said and "testclient" not in said
    finally:
        smtp.stop()
        for c in connected.values():
            c.engine.dispose()
