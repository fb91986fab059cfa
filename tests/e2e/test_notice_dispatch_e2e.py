"""Issue 18 item 1 end to end on the real stack (session dev server, sandbox CRMs over HTTPS, the
in-process workers of ``crmhub demo``, the database of ``db_url``, a local aiosmtpd server and a
loopback webhook receiver that checks Standard Webhooks signatures with a replay guard).

A tenant with an e-mail and a webhook contact runs a sync its instruction refuses. Nobody starts a
delivery by hand: the workers install the ``crmhub-notice-dispatch`` schedule, and a slot of it
(triggered here instead of waiting a minute) starts the notice's ``NoticeDeliveryWorkflow``. The
relay gets exactly one e-mail, the receiver exactly one POST, signed; its replay is refused. A second
refusal within the throttle window is no second notice, and the next pass starts nothing. The ledger
holds the notice and both deliveries and verifies offline from the auditor's report; no address is
in a ledger event, the report, a workflow history or the logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleOverlapPolicy

from api.demo import _workers, verify_ledger
from api.maintenance import NOTICE_DISPATCH_SCHEDULE_ID
from governance.lineage import CheckpointSigner, Ledger
from governance.policy import ProcessingInstruction
from schemas.lineage import EventKind
from schemas.notices import NoticeDispatchResult, notice_dispatch_workflow_id, notice_workflow_id
from schemas.settings import Settings
from schemas.sync import SyncStatus
from services import notices
from tests.notice_support import SmtpServer, WebhookReceiver
from tests.stack import stack_settings
from tests.sync_support import SF_CONTACTS_TO_HS, Direction, World, create_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADDRESS = "dpo@refused-controller.example"


@dataclass(frozen=True)
class NarrowInstruction(Direction):
    """The contacts sync, but the instruction leaves out a field the mapping reads: every run is refused."""

    def instruction(self, version: int = 1) -> ProcessingInstruction:
        ins = super().instruction(version).model_dump(mode="json")
        ins["allowed_fields"] = {
            k: [f for f in v if f != "FirstName"] for k, v in ins["allowed_fields"].items()
        }
        return ProcessingInstruction.model_validate(ins)


REFUSED = NarrowInstruction(**{**SF_CONTACTS_TO_HS.__dict__, "tenant": "noticed"})


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": 3}}


@pytest.fixture
def settings(
    tmp_path: Path, db_url: str, temporal_env: Any, worker_options: dict[str, Any], smtp: SmtpServer
) -> Settings:
    base = stack_settings(tmp_path / "data", db_url, temporal_env, **worker_options)
    return base.model_copy(update={"notices": base.notices.model_copy(update={"smtp_port": smtp.port})})


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


async def dispatch_pass(client: Client) -> tuple[str, NoticeDispatchResult]:
    """Trigger a slot of the installed schedule now; the id and result of the pass it started.
    ALLOW_ALL: a pass of an earlier test, left on a queue nobody polls, must not make this one skip."""
    handle = client.get_schedule_handle(NOTICE_DISPATCH_SCHEDULE_ID)
    before = (await handle.describe()).info.num_actions
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    for _ in range(400):
        info = (await handle.describe()).info
        if info.num_actions > before:
            break
        await asyncio.sleep(0.05)
    action = info.recent_actions[-1].action
    assert isinstance(action, ScheduleActionExecutionStartWorkflow)
    assert action.workflow_id.startswith(notice_dispatch_workflow_id())
    run = client.get_workflow_handle(
        action.workflow_id, first_execution_run_id=action.first_execution_run_id,
        result_type=NoticeDispatchResult,
    )  # fmt: skip
    return action.workflow_id, await asyncio.wait_for(run.result(), timeout=30)


async def test_a_refused_run_reaches_both_contacts_once_through_the_schedule(
    world: World, smtp: SmtpServer, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    d, engine, client = REFUSED, world.connected.engine, world.connected.client
    await create_sync(world, d)
    vault = world.connected.vault
    mail, _ = notices.add_contact(engine, vault, d.tenant, label="dpo", email=ADDRESS)
    hook, secret = notices.add_contact(engine, vault, d.tenant, label="ops-webhook", webhook_url=receiver.url)
    assert secret is not None
    receiver.secret = secret

    async with _workers(world.settings):  # installs the dispatch schedule, as `crmhub worker` does
        schedule = (await client.get_schedule_handle(NOTICE_DISPATCH_SCHEDULE_ID).describe()).schedule
        assert schedule.spec.intervals[0].every == world.settings.schedules.notice_dispatch_interval
        refused = await world.run(d, may_fail=True)
        assert refused.status is SyncStatus.REFUSED
        (notice_id,) = notices.pending_notices(engine)

        first_id, first = await dispatch_pass(client)
        assert (first.started, first.skipped) == ((notice_id,), 0)
        delivery = client.get_workflow_handle(notice_workflow_id(notice_id))
        delivered = await asyncio.wait_for(delivery.result(), timeout=30)
        assert sorted(delivered["delivered"]) == sorted([mail.id, hook.id])
        await _until(lambda: len(smtp.handler.messages) >= 1 and len(receiver.accepted) >= 1, "both sent")

        again = await world.run(d, may_fail=True)  # within the throttle window: no second notice
        assert again.status is SyncStatus.REFUSED and again.run_id != refused.run_id
        assert notices.pending_notices(engine) == []
        second_id, second = await dispatch_pass(client)
        assert (second.started, second.skipped, second.scanned) == ((), 0, 0)

    # the product's log lines (the local SMTP server's own, mail.log, quote what it received)
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert smtp.handler.recipients == [ADDRESS]
    (message,) = smtp.handler.messages
    assert notice_id in message["Subject"] and "run_refused" in message["Subject"]
    assert [(msg_id, json.loads(body)["type"]) for msg_id, body in receiver.accepted] == [
        (notice_id, "crmhub.notice.run_refused")
    ]
    assert receiver.rejected == []
    replay = {
        k: v
        for k, v in receiver.accepted_headers[0].items()
        if k.lower().startswith(("webhook-", "content-t"))
    }
    async with httpx.AsyncClient() as http:  # the same delivery again: the replay guard refuses it
        answer = await http.post(receiver.url, content=receiver.accepted[0][1], headers=replay)
    assert answer.status_code == 401 and receiver.rejected == ["replayed"]
    assert len(receiver.accepted) == 1

    events = [e for e in Ledger(engine, d.tenant).read_events() if e.kind is EventKind.NOTICE]
    assert sorted((e.details["phase"], e.details.get("channel", "")) for e in events) == [
        ("delivered", "email"),
        ("delivered", "webhook"),
        ("enqueued", ""),
    ]
    assert {e.details["notice_id"] for e in events} == {notice_id}
    assert events[0].details["notice_kind"] == "run_refused" and events[0].details["contacts"] == 2

    signer = CheckpointSigner.load_or_create(
        world.settings.data_dir.resolve() / world.settings.governance.signing_key_file
    )
    report = world.settings.data_dir / f"{d.tenant}-report.json"
    verified = verify_ledger(engine, d.tenant, signer, report)
    assert verified.ok, verified.reason
    kinds = [json.loads(x["event"])["kind"] for x in json.loads(report.read_text())["entries"]]
    assert kinds.count("notice") == 3

    secrets = (ADDRESS, receiver.url, secret)
    histories = [
        (await client.get_workflow_handle(wid).fetch_history()).to_json()
        for wid in (first_id, second_id, notice_workflow_id(notice_id))
    ]
    assert "notice webhook (URL withheld)" in logs  # httpx's request line, without the URL
    for text in (*histories, report.read_text(), logs):
        assert not any(s in text for s in secrets)
