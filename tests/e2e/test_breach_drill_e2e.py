"""Issue 18 item 3 acceptance, a breach drill end to end on the real stack (dev server, sandbox CRMs
over HTTPS, in-process workers, the database of ``db_url``, a local aiosmtpd relay and loopback
webhook receivers that verify signatures): ``gamma`` syncs, then the window opens and ``alpha`` and
``beta`` sync; ``crmhub incident open`` over the window computes from lineage that alpha and beta
are affected (12 subjects each, by keyed hash) and gamma is not; ``crmhub incident notify`` sends
each affected controller exactly one e-mail / signed webhook per contact and gamma nothing; a second
notify sends nothing again; "became aware" and "notified" are incident events in each affected
ledger; the notices carry counts and categories, no record's data; each tenant's signed ledger
report verifies offline, and ``/audit/incidents`` shows a tenant only its own incident, citing the
ledger indexes of its times.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from api.audit import AuditServices, router
from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from governance.registry import load_registry
from sandbox.runtime import RunningSandbox
from schemas.lineage import EventKind, LineageEvent, format_timestamp
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from services import notices
from services.wiring import default_subprocessors_file
from store import auditors
from tests.notice_support import SmtpServer, WebhookReceiver, drill_settings
from tests.stack import connect_demo_tenant
from tests.sync_support import run_sync
from workers.client import Connected

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALPHA, BETA, GAMMA = "alpha", "beta", "gamma"
SYNC = "contacts"
CONTACTS = 12
MAIL = {ALPHA: "dpo@alpha.example", BETA: "privacy@beta.example", GAMMA: "dpo@gamma.example"}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": CONTACTS}}


async def crmhub(*args: str) -> Result:
    """``crmhub ARGS`` in-process (its own event loop, on a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


def _incident_events(engine: Any, tenant: str) -> list[LineageEvent]:
    return [e for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.INCIDENT]


async def _until(condition: Any, seconds: float = 60) -> None:
    for _ in range(int(seconds * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out waiting for the notices")


async def test_breach_drill(
    settings: Settings, sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = SmtpServer()
    smtp.start()
    hooks = {ALPHA: WebhookReceiver(), GAMMA: WebhookReceiver()}
    drill = drill_settings(settings, smtp, monkeypatch)
    connected: dict[str, Connected] = {}
    try:
        for tenant in (GAMMA, ALPHA, BETA):
            connected[tenant] = await connect_demo_tenant(drill, sandbox, tenant, SYNC)
        engine = connected[ALPHA].engine
        vault = connected[ALPHA].vault
        for tenant, address in MAIL.items():
            notices.add_contact(engine, vault, tenant, label="dpo", email=address)
        for tenant, hook in hooks.items():
            _, secret = notices.add_contact(engine, vault, tenant, label="ops-webhook", webhook_url=hook.url)
            assert secret is not None
            hook.secret = secret

        async with _workers(drill):
            # -- gamma syncs before the window; alpha and beta inside it ---------------------------
            progress = await run_sync(connected[GAMMA], drill, GAMMA, SYNC, SyncMode.FULL)
            assert progress.status is SyncStatus.COMPLETED
            await asyncio.sleep(0.05)
            start = datetime.now(UTC)
            for tenant in (ALPHA, BETA):
                progress = await run_sync(connected[tenant], drill, tenant, SYNC, SyncMode.FULL)
                assert progress.status is SyncStatus.COMPLETED
            end = datetime.now(UTC)

            # -- bad input is refused, naming the field --------------------------------------------
            bad = await crmhub("incident", "open", "--summary", "x", "--from", end.isoformat(),
                               "--to", start.isoformat())  # fmt: skip
            assert bad.exit_code != 0 and "must be after --from" in str(bad.exception)
            unknown = await crmhub("incident", "open", "--summary", "x", "--from", start.isoformat(),
                                   "--tenant", "nobody")  # fmt: skip
            assert "--tenant 'nobody': no such tenant" in str(unknown.exception)

            # -- open: the scope comes from lineage ------------------------------------------------
            opened = await crmhub(
                "incident", "open", "--from", start.isoformat(), "--to", end.isoformat(),
                "--nature", "unauthorized_access", "--summary", "staging store readable from outside",
                "--consequences", "contact details readable by an unknown party",
                "--measures", "access closed, data keys rotated", "--json",
            )  # fmt: skip
            assert opened.exit_code == 0, opened.output
            doc = json.loads(opened.output)
            incident_id = doc["incident"]
            got = {p["tenant"]: (p["subjects"], p["subjects_basis"], p["records"]) for p in doc["tenants"]}
            assert got == {
                ALPHA: (CONTACTS, "keyed_hashes", CONTACTS),
                BETA: (CONTACTS, "keyed_hashes", CONTACTS),
            }
            assert all(
                p["data_categories"] == ["business_contact", "contact_details"] for p in doc["tenants"]
            )
            assert all("Contact.Email" in p["fields"] and p["syncs"] == [SYNC] for p in doc["tenants"])
            assert _incident_events(engine, GAMMA) == []

            # -- notify: one notice per affected controller, delivered right away ------------------
            notified = await crmhub("incident", "notify", incident_id)
            assert notified.exit_code == 0, notified.output
            assert (
                "tenant alpha: notified at" in notified.output
                and "tenant beta: notified at" in notified.output
            )
            assert "delivery started for 2 notice(s)" in notified.output
            await _until(
                lambda: len(smtp.handler.messages) >= 2 and len(hooks[ALPHA].accepted) >= 1, seconds=30
            )
            again = await crmhub("incident", "notify", incident_id)
            assert again.exit_code == 0, again.output
            assert again.output.count("already notified") == 2 and "nothing sent again" in again.output
            await asyncio.sleep(2)  # a second delivery, if any were wrongly started, would land here
        assert sorted(smtp.handler.recipients) == sorted([MAIL[ALPHA], MAIL[BETA]])
        assert len(smtp.handler.messages) == 2
        assert len(hooks[ALPHA].accepted) == 1 and hooks[ALPHA].rejected == []
        assert hooks[GAMMA].accepted == [] and hooks[GAMMA].rejected == []

        # -- the notices say counts and categories, never a record's data ------------------------
        bodies = [bytes(m.get_payload(decode=True)).decode() for m in smtp.handler.messages]
        assert all(incident_id in body and "subjects: 12" in body for body in bodies)
        bodies += [body.decode() for _, body in hooks[ALPHA].accepted]
        payload = json.loads(hooks[ALPHA].accepted[0][1])
        assert payload["type"] == "crmhub.notice.breach" and payload["facts"]["subjects"] == CONTACTS
        assert payload["facts"]["incident_id"] == incident_id
        assert payload["facts"]["data_categories"] == "business_contact,contact_details"
        people = sandbox.salesforce.live_records("Contact")
        values = {str(r[k]) for r in people for k in ("Email", "LastName", "Phone") if r.get(k)}
        assert len(values) >= CONTACTS
        for body in bodies:
            assert not [v for v in values if v in body]
            assert "staging store readable" not in body  # free text stays out of the notice

        # -- became aware and notified, with their times, in each affected ledger ----------------
        for tenant in (ALPHA, BETA):
            steps = {str(e.details["step"]): e for e in _incident_events(engine, tenant)}
            assert list(steps) == ["became_aware", "notified"]
            aware, told = steps["became_aware"], steps["notified"]
            assert aware.details["became_aware"] == doc["became_aware"]
            assert aware.counts["subjects"] == CONTACTS
            assert told.details["notified"] == format_timestamp(told.timestamp)
            assert told.timestamp >= aware.timestamp and told.details["late"] is False
            phases = [
                e.details["phase"] for e in Ledger(engine, tenant).read_events()
                if e.kind is EventKind.NOTICE and e.details.get("notice_id") == told.details["notice_id"]
            ]  # fmt: skip
            assert phases.count("enqueued") == 1 and phases.count("delivered") == (
                2 if tenant == ALPHA else 1
            )
        assert _incident_events(engine, GAMMA) == []

        report = await crmhub("incident", "report", incident_id, "--tenant", BETA)
        assert report.exit_code == 0, report.output
        assert "data subjects (approx.): 12 (counted by distinct keyed record-id hashes)" in report.output
        assert "access closed, data keys rotated" in report.output and ALPHA not in report.output
        listed = await crmhub("incident", "list")
        assert incident_id in listed.output and "2/2" in listed.output

        # -- the auditor's report verifies offline; /audit/incidents: the tenant's own only ------
        key_file = tmp_path / "crmhub.pub.pem"
        key_file.write_text((await crmhub("audit", "public-key")).output)
        cited: dict[str, list[int]] = {}
        for tenant in (ALPHA, BETA):
            ledger_file = tmp_path / f"{tenant}-ledger.json"
            exported = await crmhub(
                "audit", "report", "--tenant", tenant, "--kind", "ledger", "-o", str(ledger_file)
            )
            assert exported.exit_code == 0, exported.output
            verified = await crmhub("audit", "verify", str(ledger_file), "--public-key", str(key_file))
            assert verified.exit_code == 0, verified.output
            entries = {
                x["index"]: json.loads(x["event"]) for x in json.loads(ledger_file.read_text())["entries"]
            }
            with engine.begin() as conn:
                _, token = auditors.create_token(conn, tenant=tenant, name="auditor", now=datetime.now(UTC))
            web = FastAPI()
            web.include_router(router, prefix="/audit")
            web.state.audit_services = AuditServices(engine, load_registry(default_subprocessors_file()))
            page = TestClient(web).get("/audit/incidents", headers={"Authorization": f"Bearer {token}"})
            assert page.status_code == 200
            (seen,) = page.json()["incidents"]
            assert seen["incident"] == incident_id and seen["subjects"] == CONTACTS
            assert (ALPHA if tenant == BETA else BETA) not in json.dumps(page.json())
            cited[tenant] = [x["index"] for x in seen["ledger"]]
            for x in seen["ledger"]:
                assert entries[x["index"]]["kind"] == "incident"
                assert entries[x["index"]]["details"]["step"] == x["step"]
                assert entries[x["index"]]["timestamp"] == x["timestamp"]
        assert all(len(v) == 2 for v in cited.values())
        with engine.begin() as conn:
            _, token = auditors.create_token(conn, tenant=GAMMA, name="auditor", now=datetime.now(UTC))
        page = TestClient(web).get("/audit/incidents", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200 and page.json()["incidents"] == []
    finally:
        smtp.stop()
        for hook in hooks.values():
            hook.close()
        for c in connected.values():
            c.engine.dispose()
