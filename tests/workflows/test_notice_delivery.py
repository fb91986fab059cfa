"""NoticeDeliveryWorkflow on the Temporal dev server: the SMTP relay is down, the workflow retries,
the relay comes up, the notice is delivered once; each attempt is in the ledger; no address in the
workflow history."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from governance.keys import LocalKeyringProvider
from governance.lineage import Ledger
from governance.vault import Vault
from schemas.lineage import EventKind
from schemas.notices import NoticeDeliveryInput, notice_workflow_id
from schemas.settings import Settings, load_settings
from services import notices
from services.wiring import ActivityDeps, deps_from_settings
from store import tenants as tenant_store
from tests.notice_support import SmtpServer
from workflows.notice_activities import NoticeActivities
from workflows.notices import NoticeDeliveryWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADDRESS = "dpo@controller.example"


@pytest.fixture
def smtp() -> SmtpServer:
    return SmtpServer()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any, smtp: SmtpServer) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        temporal={"address": temporal_env.client.service_client.config.target_host,
                  "control_task_queue": f"control-{suffix}"},
        regions={"eu": {"task_queue": f"eu-{suffix}", "jurisdiction": "EEA"}},
        notices={"smtp_port": smtp.port, "timeout_s": 2},
    )  # fmt: skip


@pytest.fixture
def deps(settings: Settings, db_engine: Engine, tmp_path: Path) -> ActivityDeps:
    with db_engine.begin() as conn:
        tenant_store.create_tenant(
            conn,
            id="acme",
            name="Acme",
            home_region="eea",
            authorised_subprocessors=[],
            now=datetime.now(UTC),
        )
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    return deps_from_settings(settings, engine=db_engine, vault=vault, oauth_configs=[])


@pytest.fixture
async def worker(client: Client, settings: Settings, deps: ActivityDeps) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client,
            task_queue=settings.temporal.control_task_queue,
            workflows=[NoticeDeliveryWorkflow],
            activities=NoticeActivities(deps).activities(),
            activity_executor=pool,
        ) as w:
            yield w


async def test_delivery_retries_while_the_relay_is_down_and_delivers_once_it_is_up(
    client: Client, settings: Settings, deps: ActivityDeps, worker: Worker, smtp: SmtpServer
) -> None:
    contact, _ = notices.add_contact(deps.engine, deps.vault, "acme", label="dpo", email=ADDRESS)
    sent = notices.enqueue_notice(deps.engine, tenant="acme", kind="run_failed", facts={"sync_id": "s1"})
    handle = await client.start_workflow(
        NoticeDeliveryWorkflow.run,
        NoticeDeliveryInput(notice_id=sent.notice_id),
        id=notice_workflow_id(sent.notice_id),
        task_queue=settings.temporal.control_task_queue,
    )
    ledger = Ledger(deps.engine, "acme")
    for _ in range(100):  # the relay is down: wait for a failed attempt in the ledger
        if any(e.details.get("phase") == "delivery_failed" for e in ledger.read_events()):
            break
        await asyncio.sleep(0.1)
    smtp.start()
    try:
        result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        smtp.stop()
    assert result.delivered == (contact.id,)
    assert smtp.handler.recipients == [ADDRESS]
    phases = [e.details["phase"] for e in ledger.read_events() if e.kind is EventKind.NOTICE]
    assert phases[0] == "enqueued" and phases[-1] == "delivered"
    assert "delivery_failed" in phases and phases.count("delivered") == 1
    history = await handle.fetch_history()
    assert ADDRESS.encode() not in history.to_json().encode()
