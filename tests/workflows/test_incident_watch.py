"""The incident watch on the session dev server (``IncidentWatchWorkflow``, activity
``watch_incidents``, a fresh control queue, the real activities against ``db_url``): one pass appends
the incident ledger events an open that failed on tenant 2 of 3 still owed and opens one
``codec_token_misuse`` incident for a token that asked three times for another namespace; a second
pass appends nothing and finds that incident; the pass's history replays. A pass also appends the
``notice`` event an enqueue that crashed after its commit owed, and verifies every ledger: a
tampered one opens one ``ledger_verification_failed`` incident, which later passes find (before and
after it was notified) instead of opening another."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from governance.lineage import Ledger
from schemas.lineage import EventKind, LineageEvent
from schemas.maintenance import IncidentWatchInput, IncidentWatchResult, incident_watch_workflow_id
from schemas.settings import Settings, load_settings
from services.access_ledger import codec_actor, record_access
from services.incident_scope import Scope
from services.incidents import list_incidents, notify, open_incident
from services.ledger_outbox import owed
from services.notices import add_contact, enqueue_notice
from services.wiring import ActivityDeps, deps_from_settings
from store import codec_audit as audit_store
from store import lineage as lineage_store
from tests.incident_support import ACME, GLOBEX, HOUR, INITECH, hashes, pull_event, seeded_vault
from workflows.maintenance import IncidentWatchWorkflow
from workflows.maintenance_activities import MaintenanceActivities

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=tmp_path / "data", database_url=db_url,
        temporal={"address": temporal_env.client.service_client.config.target_host,
                  "control_task_queue": f"control-{suffix}"},
        regions={"eu": {"task_queue": f"eu-{suffix}", "jurisdiction": "EEA"}},
    )  # fmt: skip


def _misuse(engine: Engine) -> None:
    """Token ``night`` decoded acme's payloads, then asked three times for another namespace."""
    record_access(engine, ACME, "codec_decode", codec_actor("night"), at=datetime.now(UTC) - HOUR / 6)
    with engine.begin() as conn:
        for minutes in (8, 6, 4):
            at = datetime.now(UTC) - minutes * HOUR / 60
            row = audit_store.CodecAuditRow(
                at, "night", "crmhub-payroll", "decode", 1, "forbidden", "10.0.0.7:1"
            )
            audit_store.insert_audit(conn, row)


@asynccontextmanager
async def _watch_worker(client: Client, queue: str, deps: ActivityDeps) -> AsyncIterator[None]:
    """A control-queue worker with the watch workflow and the real maintenance activities."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client, task_queue=queue, workflows=[IncidentWatchWorkflow],
            activities=MaintenanceActivities(deps).activities(), activity_executor=pool,
        ):  # fmt: skip
            yield


async def _pass(client: Client, queue: str, n: int) -> IncidentWatchResult:
    return await client.execute_workflow(
        IncidentWatchWorkflow.run, IncidentWatchInput(), id=f"{incident_watch_workflow_id()}-{queue}-{n}",
        task_queue=queue,
    )  # fmt: skip


def _steps(engine: Engine, tenant: str) -> list[str]:
    return [
        str(e.details["step"]) for e in Ledger(engine, tenant).read_events() if e.kind is EventKind.INCIDENT
    ]


async def test_a_watch_pass_repairs_owed_events_and_opens_the_codec_incident(
    client: Client, settings: Settings, db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = seeded_vault(db_engine, tmp_path, NOW - 24 * HOUR)
    deps = deps_from_settings(settings, engine=db_engine, vault=vault, oauth_configs=[])
    with monkeypatch.context() as patched:
        real = Ledger.append

        def append(self: Ledger, events: Sequence[LineageEvent], **kw: Any) -> list[int]:
            if self.tenant == GLOBEX and any(e.kind is EventKind.INCIDENT for e in events):
                raise ConnectionError("database gone")
            return real(self, events, **kw)

        patched.setattr(Ledger, "append", append)
        with pytest.raises(ConnectionError):
            open_incident(
                db_engine, deps.subprocessors, Scope(NOW - 96 * HOUR, NOW), nature="loss",
                summary="backup lost", now=NOW - HOUR,
            )  # fmt: skip
    assert [r.tenant for r in owed(db_engine)] == [GLOBEX, INITECH]
    _misuse(db_engine)
    queue = settings.temporal.control_task_queue
    async with _watch_worker(client, queue, deps):
        first, second = [await _pass(client, queue, n) for n in (1, 2)]
    assert (first.appended, first.still_owed, list(first.opened), first.covered) == (2, 0, ["night"], {})
    assert (second.appended, second.opened, second.covered) == (0, {}, first.opened)
    assert owed(db_engine) == []
    codec_incident = first.opened["night"]
    assert [
        t.tenant for t in next(i for i in list_incidents(db_engine) if i.row.id == codec_incident).tenants
    ] == [ACME]
    assert _steps(db_engine, ACME) == ["became_aware", "became_aware"]  # the loss, then the codec misuse
    assert _steps(db_engine, GLOBEX) == ["became_aware"] and _steps(db_engine, INITECH) == ["became_aware"]

    history = await client.get_workflow_handle(f"{incident_watch_workflow_id()}-{queue}-1").fetch_history()
    replayer = Replayer(workflows=[IncidentWatchWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def test_a_watch_pass_appends_owed_notice_events_and_opens_one_incident_per_ledger_failure(
    client: Client, settings: Settings, db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = seeded_vault(db_engine, tmp_path, NOW - 24 * HOUR)
    deps = deps_from_settings(settings, engine=db_engine, vault=vault, oauth_configs=[])
    add_contact(db_engine, vault, ACME, label="dpo", email="dpo@acme.example", now=NOW - 2 * HOUR)
    with monkeypatch.context() as patched:
        real = Ledger.append

        def append(self: Ledger, events: Sequence[LineageEvent], **kw: Any) -> list[int]:
            if any(e.kind is EventKind.NOTICE for e in events):
                raise ConnectionError("database gone")
            return real(self, events, **kw)

        patched.setattr(Ledger, "append", append)
        with pytest.raises(ConnectionError):
            enqueue_notice(db_engine, tenant=ACME, kind="run_failed", facts={}, now=NOW - HOUR)
    (notice_owed,) = owed(db_engine)
    Ledger(db_engine, GLOBEX).checkpoint(deps.signer)
    with db_engine.begin() as conn:  # globex's second pull rewritten after it was signed
        conn.execute(
            update(lineage_store.events)
            .where(lineage_store.events.c.tenant == GLOBEX, lineage_store.events.c.idx == 1)
            .values(event=pull_event(GLOBEX, NOW, hashes(GLOBEX, 1)).canonical_bytes())
        )
    queue = settings.temporal.control_task_queue
    async with _watch_worker(client, queue, deps):
        first, second = [await _pass(client, queue, n) for n in (1, 2)]
        (incident,) = list_incidents(db_engine)
        add_contact(db_engine, vault, GLOBEX, label="dpo", email="dpo@globex.example", now=NOW)
        (told,) = notify(db_engine, incident.row.id)
        third = await _pass(client, queue, 3)
    assert (first.appended, first.still_owed, first.ledger_failed) == (1, 0, [GLOBEX])
    assert first.ledger_opened == {GLOBEX: incident.row.id} and first.ledger_covered == {}
    assert incident.row.signal == "ledger_verification_failed" and [t.tenant for t in incident.tenants] == [
        GLOBEX
    ]
    assert (second.appended, second.ledger_opened, second.ledger_covered) == (
        0,
        {},
        {GLOBEX: incident.row.id},
    )
    assert told.notified is not None  # notified: only the failure's own record still knows it
    assert (third.ledger_failed, third.ledger_opened, third.ledger_covered) == (
        [GLOBEX], {}, {GLOBEX: incident.row.id},
    )  # fmt: skip
    assert [i.row.id for i in list_incidents(db_engine)] == [incident.row.id]
    assert owed(db_engine) == []
    phases = [
        e.details["phase"] for e in Ledger(db_engine, ACME).read_events()
        if e.kind is EventKind.NOTICE and e.details["notice_id"] == notice_owed.ref
    ]  # fmt: skip
    assert phases == ["enqueued"]
    assert _steps(db_engine, GLOBEX) == ["became_aware", "notified"]
