"""Issue 18 item 2 acceptance, end to end on the real stack (dev server, sandbox CRMs over HTTPS,
in-process workers, the database of ``db_url``): a subprocessor change (the Temporal provider moves
to Temporal Cloud) is proposed with ``crmhub subprocessors propose``; the three tenants are
notified; ``keeper`` objects and keeps the old set, ``stopper`` objects and stops; the window
closes; each controller's contact gets the notice through the notice-dispatch schedule (e-mail to
a local SMTP server; ``keeper``'s webhook too, signature verified), with the window's end; a sync
run of each proves which registry version its plan check used (``accepter`` v2,
``keeper`` v1, ``stopper`` refused); every step is a ledger event that verifies offline from the
signed report (``crmhub audit verify``); ``/audit/subprocessors`` lists versions, notices and
objections.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from api.audit import AuditServices, router
from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from governance.registry import load_registry
from sandbox.runtime import RunningSandbox
from schemas.lineage import EventKind, LineageEvent
from schemas.notices import notice_workflow_id
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from services import notices
from services.wiring import default_subprocessors_file
from store import auditors
from store import notices as notice_store
from store import subprocessor_versions as version_store
from tests.e2e.test_notice_dispatch_e2e import dispatch_pass
from tests.notice_support import SmtpServer, WebhookReceiver
from tests.stack import connect_demo_tenant
from tests.sync_support import run_sync, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCEPTER, KEEPER, STOPPER = "accepter", "keeper", "stopper"
SYNC = "contacts"
CONTACTS = 12
WINDOW_S = 15  # long enough for the workers to start and deliver the notices before it closes


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": CONTACTS}}


async def crmhub(*args: str) -> Result:
    """``crmhub ARGS`` in-process (its own event loop, on a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


def _registry_events(engine: Any, tenant: str) -> list[LineageEvent]:
    return [e for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.REGISTRY]


def _new_registry(path: Path) -> Path:
    data = yaml.safe_load(default_subprocessors_file().read_text(encoding="utf-8"))
    (temporal,) = [s for s in data["subprocessors"] if s["id"] == "temporal"]
    temporal.update(entity="Temporal Technologies Inc.", service="Temporal Cloud namespace", country="US")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.model_copy(
        update={"notices": settings.notices.model_copy(update={"smtp_port": smtp.port})}
    )


async def test_a_change_with_objections_applies_to_the_others_only(
    settings: Settings,
    sandbox: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp: SmtpServer,
    receiver: WebhookReceiver,
) -> None:
    for key, value in worker_env(settings).items():
        if key.startswith("CRMHUB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")
    connected = [await connect_demo_tenant(settings, sandbox, t, SYNC) for t in (ACCEPTER, KEEPER, STOPPER)]
    engine = connected[0].engine
    vault = connected[0].vault
    for tenant in (ACCEPTER, KEEPER, STOPPER):
        notices.add_contact(engine, vault, tenant, label="dpo", email=f"dpo@{tenant}.example")
    _, secret = notices.add_contact(engine, vault, KEEPER, label="hook", webhook_url=receiver.url)
    assert secret is not None
    receiver.secret = secret
    try:
        # -- propose: every tenant is notified (the Temporal provider concerns everyone) ----------
        proposed = await crmhub(
            "subprocessors", "propose", str(_new_registry(tmp_path / "v2.yaml")),
            "--summary", "Temporal moves to Temporal Cloud", "--window", f"{WINDOW_S}s",
        )  # fmt: skip
        assert proposed.exit_code == 0, proposed.output
        assert "version 2 (changed temporal)" in proposed.output
        assert "notified: accepter, keeper, stopper" in proposed.output
        with engine.connect() as conn:
            for tenant in (ACCEPTER, KEEPER, STOPPER):
                notice = notice_store.last_notice(
                    conn,
                    tenant,
                    "subprocessor_change",
                    "subprocessors-v2",
                    since=datetime(2000, 1, 1, tzinfo=UTC),
                )
                assert notice is not None and notice.facts["version"] == 2
                assert notice.facts["changed"] == "temporal"

        # -- delivered by the dispatch schedule the workers install, nobody starting it by hand -----
        async with _workers(settings):
            _, dispatched = await dispatch_pass(connected[0].client)
            assert len(dispatched.started) == 3
            for notice_id in dispatched.started:
                handle = connected[0].client.get_workflow_handle(notice_workflow_id(notice_id))
                await asyncio.wait_for(handle.result(), timeout=30)
        assert sorted(smtp.handler.recipients) == sorted(
            f"dpo@{t}.example" for t in (ACCEPTER, KEEPER, STOPPER)
        )
        for message in smtp.handler.messages:
            assert "subprocessor_change" in message["Subject"]
            raw = message.get_payload(decode=True)
            assert isinstance(raw, bytes)
            text = raw.decode()
            assert "window_closes: " in text and "changed: temporal" in text
        ((_, body),) = receiver.accepted
        assert json.loads(body)["facts"]["version"] == 2 and receiver.rejected == []

        # -- objections (keep / stop); the window is still open, so closing is refused -------------
        kept = await crmhub("subprocessors", "object", "2", "--tenant", KEEPER, "--choice", "keep")
        assert kept.exit_code == 0, kept.output
        stopped = await crmhub("subprocessors", "object", "2", "--tenant", STOPPER, "--choice", "stop")
        assert stopped.exit_code == 0, stopped.output
        early = await crmhub("subprocessors", "close", "2")
        assert early.exit_code != 0 and "is open until" in str(early.exception)
        with engine.connect() as conn:  # the window runs from the propose command's own clock
            v2 = version_store.get_version(conn, 2)
        assert v2 is not None
        await asyncio.sleep(max(0.0, (v2.window_closes - datetime.now(UTC)).total_seconds() + 0.2))
        late = await crmhub("subprocessors", "object", "2", "--tenant", ACCEPTER)
        assert late.exit_code != 0 and "no longer accepted" in str(late.exception)
        closed = await crmhub("subprocessors", "close", "2")
        assert closed.exit_code == 0, closed.output
        assert "version 2 applied to: accepter" in closed.output
        listed = await crmhub("subprocessors", "list")
        assert "tenant keeper: runs under v1, held back by its objection to v2" in listed.output
        assert (
            "tenant stopper: runs under v1, held back by its objection to v2 — syncs stopped" in listed.output
        )

        # -- a sync run of each: the plan check uses the tenant's effective version ----------------
        async with _workers(settings):
            for c, tenant in zip(connected[:2], (ACCEPTER, KEEPER), strict=True):
                progress = await run_sync(c, settings, tenant, SYNC, SyncMode.FULL)
                assert progress.status is SyncStatus.COMPLETED
            refused = await run_sync(connected[2], settings, STOPPER, SYNC, SyncMode.FULL, may_fail=True)
            assert refused.status is SyncStatus.REFUSED
        assert len(sandbox.hubspot.live_records("contacts")) == CONTACTS  # accepter and keeper: one set

        steps = {
            t: [(e.details["step"], e.details["version"]) for e in _registry_events(engine, t)]
            for t in (ACCEPTER, KEEPER, STOPPER)
        }
        assert steps[ACCEPTER] == [("notice", 2), ("applied", 2), ("planned", 2)]
        assert steps[KEEPER] == [("notice", 2), ("objection", 2), ("not_applied", 2), ("planned", 1)]
        assert steps[STOPPER] == [("notice", 2), ("objection", 2), ("not_applied", 2)]
        (refusal,) = [e for e in Ledger(engine, STOPPER).read_events() if e.kind is EventKind.REFUSAL]
        assert refusal.details["rule"] == "subprocessor_objection"
        assert refusal.details["objected_version"] == 2

        # -- every step verifies offline from the signed report -----------------------------------
        key_file = tmp_path / "crmhub.pub.pem"
        public_key = await crmhub("audit", "public-key")
        key_file.write_text(public_key.output)
        for tenant in (ACCEPTER, KEEPER, STOPPER):
            report = tmp_path / f"{tenant}-ledger.json"
            exported = await crmhub(
                "audit", "report", "--tenant", tenant, "--kind", "ledger", "-o", str(report)
            )
            assert exported.exit_code == 0, exported.output
            entries = json.loads(report.read_text())["entries"]
            kinds = [json.loads(x["event"])["kind"] for x in entries]
            assert kinds.count("registry") == len(steps[tenant])
            verified = await crmhub("audit", "verify", str(report), "--public-key", str(key_file))
            assert verified.exit_code == 0, verified.output

        # -- /audit/subprocessors: versions, notices, objections ----------------------------------
        with engine.begin() as conn:
            _, token = auditors.create_token(conn, tenant=KEEPER, name="auditor", now=datetime.now(UTC))
        web = FastAPI()
        web.include_router(router, prefix="/audit")
        web.state.audit_services = AuditServices(engine, load_registry(default_subprocessors_file()))
        page = TestClient(web).get("/audit/subprocessors", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200
        history = page.json()["registry"]
        assert [(v["version"], v["change"]) for v in history["versions"]] == [
            (1, "initial version"),
            (2, "changed temporal"),
        ]
        assert history["effective_version"] == 1 and history["held_back_by_objection_to"] == 2
        assert [n["version"] for n in history["notices"]] == [2]
        assert [(o["version"], o["choice"], o["by"]) for o in history["objections"]] == [(2, "keep", "cli")]
        assert [(r["sync_id"], r["version"]) for r in history["runs"]] == [(SYNC, 1)]
    finally:
        for c in connected:
            c.engine.dispose()
