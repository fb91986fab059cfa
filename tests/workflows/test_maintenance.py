"""Maintenance on the session dev server: the retention purge and the key-rotation check run as their
workflows on a fresh control queue with the real activities against ``db_url`` (SQLite, or PostgreSQL
with CRMHUB_TEST_DATABASE_URL); their Temporal Schedules are installed with the intervals from
settings and overlap SKIP, by the API and by ``crmhub schedules``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
)
from temporalio.worker import Worker
from typer.testing import CliRunner

from api.maintenance import (
    INCIDENT_WATCH_SCHEDULE_ID,
    KEY_ROTATION_SCHEDULE_ID,
    MAINTENANCE_SCHEDULE_IDS,
    NOTICE_DISPATCH_SCHEDULE_ID,
    RETENTION_SCHEDULE_ID,
    describe_maintenance_schedules,
    install_maintenance_schedules,
)
from governance.keys import LocalKeyringProvider
from governance.lineage import Ledger, verify_checkpoint
from governance.policy import ProcessingInstruction
from governance.vault import Vault
from schemas.lineage import EventKind
from schemas.maintenance import (
    KeyRotationInput,
    KeyRotationResult,
    RetentionPurgeInput,
    RetentionPurgeResult,
    incident_watch_workflow_id,
    key_rotation_workflow_id,
    retention_purge_workflow_id,
)
from schemas.notices import notice_dispatch_workflow_id
from schemas.settings import Settings, load_settings
from services.wiring import ActivityDeps, deps_from_settings
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import instructions as instruction_store
from store import keys as keystore
from store import staging as staging_store
from store import tenants as tenant_store
from workers.converter import CODEC_TENANT
from workers.worker import build_workers
from workflows.activities import SyncActivities
from workflows.maintenance import KeyRotationCheckWorkflow, RetentionPurgeWorkflow
from workflows.maintenance_activities import MaintenanceActivities

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def instruction(tenant: str, retention_days: int) -> ProcessingInstruction:
    return ProcessingInstruction.model_validate(
        {
            "tenant": tenant,
            "version": 1,
            "purpose": "crm-sync",
            "data_categories": ["contact_details"],
            "allowed_fields": {"Contact": ["Id", "Email"]},
            "retention_days": retention_days,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce", "hubspot"],
            "valid_from": "2025-01-01T00:00:00Z",
        }
    )


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    """This test's database and data dir, the session dev server and fresh task queues."""
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        temporal={
            "address": temporal_env.client.service_client.config.target_host,
            "control_task_queue": f"control-{suffix}",
        },
        regions={"eu": {"task_queue": f"eu-{suffix}", "jurisdiction": "EEA"}},
        schedules={
            "retention_purge_interval": "PT6H",
            "key_rotation_check_interval": "P2D",
            "notice_dispatch_interval": "PT2M",
        },
    )


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    return db_engine


@pytest.fixture
def vault(engine: Engine, tmp_path: Path) -> Vault:
    # A small rotate_after, so "near the limit" is a few hundred seals away.
    return Vault(
        engine, LocalKeyringProvider(tmp_path / "keyring.json"), rotate_after=1000, reserve_block=100
    )


@pytest.fixture
def deps(settings: Settings, engine: Engine, vault: Vault) -> ActivityDeps:
    return deps_from_settings(settings, engine=engine, vault=vault, oauth_configs=[])


@pytest.fixture
async def worker(client: Client, settings: Settings, deps: ActivityDeps) -> AsyncIterator[Worker]:
    """The maintenance workflows and the real activities on the fresh control queue."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(
            client,
            task_queue=settings.temporal.control_task_queue,
            workflows=[RetentionPurgeWorkflow, KeyRotationCheckWorkflow],
            activities=MaintenanceActivities(deps).activities(),
            activity_executor=pool,
        ) as w:
            yield w


# ---- retention purge -----------------------------------------------------------------------------


def add_tenant(engine: Engine, tenant: str, retention_days: int | None) -> None:
    with engine.begin() as conn:
        tenant_store.create_tenant(
            conn, id=tenant, name=tenant, home_region="eea", authorised_subprocessors=["hubspot"], now=NOW
        )
        if retention_days is not None:
            ins = instruction(tenant, retention_days)
            instruction_store.add_instruction(
                conn,
                tenant=tenant,
                version=1,
                content=ins.model_dump(mode="json"),
                content_hash=ins.content_hash,
                now=NOW,
            )


def stage(engine: Engine, tenant: str, batch: str, expires_at: datetime) -> None:
    with engine.begin() as conn:
        staging_store.put_staged(
            conn,
            staging_store.StagedPart(
                batch_id=batch, part=0, tenant=tenant, sync_id="s", run_id="r", seq=0, sealed=b"sealed",
                records=3, deleted=0, deleted_keys=None, created=NOW - timedelta(days=30),
                expires_at=expires_at,
            ),
        )  # fmt: skip


def dead_letter(engine: Engine, tenant: str, letter_id: str, age: timedelta) -> None:
    """A dead letter of its own record (a sync keeps one letter per refused record)."""
    kh = "kh_" + hashlib.sha256(letter_id.encode()).hexdigest()[:32]
    with engine.begin() as conn:
        dead_letter_store.add_dead_letters(
            conn,
            [
                dead_letter_store.DeadLetter(
                    id=letter_id, tenant=tenant, sync_id="s", run_id="r", batch_id="b", record_key_hash=kh,
                    sealed_record=b"sealed", error_code="INVALID_EMAIL", error_message="upsert refused",
                    created=NOW - age,
                )
            ],
        )  # fmt: skip


def map_id(engine: Engine, tenant: str, key_hash: str, age: timedelta) -> None:
    with engine.begin() as conn:
        id_map_store.upsert_id_map(conn, tenant, "s", [(key_hash, f"dest-{key_hash[-4:]}")], now=NOW - age)


def remaining(engine: Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        return {
            "staging": {
                str(b) for b in conn.execute(select(staging_store.staging_batches.c.batch_id)).scalars()
            },
            "dead_letters": {
                str(i) for i in conn.execute(select(dead_letter_store.dead_letters.c.id)).scalars()
            },
            "id_map": {str(h) for h in conn.execute(select(id_map_store.id_map.c.source_key_hash)).scalars()},
        }


async def run_purge(client: Client, settings: Settings) -> RetentionPurgeResult:
    return await client.execute_workflow(
        RetentionPurgeWorkflow.run,
        RetentionPurgeInput(),
        id=f"{retention_purge_workflow_id()}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.control_task_queue,
        execution_timeout=timedelta(minutes=2),
    )


async def test_retention_purge_deletes_what_outlived_its_retention_and_records_it(
    client: Client, settings: Settings, engine: Engine, deps: ActivityDeps, worker: Worker
) -> None:
    add_tenant(engine, "acme", retention_days=7)
    add_tenant(engine, "beta", retention_days=30)
    add_tenant(engine, "nodoc", retention_days=None)
    stage(engine, "acme", "acme-expired", NOW - timedelta(hours=1))
    stage(engine, "acme", "acme-young", NOW + timedelta(days=1))
    stage(engine, "nodoc", "nodoc-expired", NOW - timedelta(minutes=5))
    dead_letter(engine, "acme", "acme-old", timedelta(days=8))
    dead_letter(engine, "acme", "acme-young", timedelta(days=6))
    dead_letter(engine, "beta", "beta-8d", timedelta(days=8))  # beta keeps dead letters for 30 days
    dead_letter(engine, "nodoc", "nodoc-old", timedelta(days=400))  # no instruction: no retention known
    map_id(engine, "acme", "kh_" + "01" * 16, timedelta(days=10))
    map_id(engine, "acme", "kh_" + "02" * 16, timedelta(days=1))

    result = await run_purge(client, settings)

    by_tenant = {t.tenant: t for t in result.tenants}
    assert [t.tenant for t in result.tenants] == ["acme", "beta", "nodoc"]
    acme, beta, nodoc = by_tenant["acme"], by_tenant["beta"], by_tenant["nodoc"]
    assert (acme.staging_parts, acme.dead_letters, acme.id_map_rows) == (1, 1, 1)
    assert acme.retention_days == 7 and acme.instruction_version == 1 and acme.recorded
    assert (beta.staging_parts, beta.dead_letters, beta.id_map_rows, beta.recorded) == (0, 0, 0, False)
    assert (nodoc.staging_parts, nodoc.dead_letters, nodoc.retention_days) == (1, 0, None)
    assert "no processing instruction" in nodoc.note and nodoc.recorded
    assert result.counts() == {"staging_parts": 2, "dead_letters": 1, "id_map_rows": 1}
    assert remaining(engine) == {
        "staging": {"acme-young"},
        "dead_letters": {"acme-young", "beta-8d", "nodoc-old"},
        "id_map": {"kh_" + "02" * 16},
    }

    ledger = Ledger(engine, "acme")
    (event,) = ledger.read_events()
    assert event.kind is EventKind.DELETE and event.run_id.startswith("retention:")
    assert event.counts == {"staging_parts": 1, "dead_letters": 1, "id_map_rows": 1}
    assert event.details["reason"] == "retention" and event.details["retention_days"] == 7
    assert event.instruction_version == 1 and event.purpose == "crm-sync"
    (checkpoint,) = ledger.checkpoints()
    assert checkpoint.size == 1
    verify_checkpoint(checkpoint, deps.signer.public_key)
    assert [e.counts for e in Ledger(engine, "nodoc").read_events()] == [
        {"staging_parts": 1, "dead_letters": 0, "id_map_rows": 0}
    ]
    assert Ledger(engine, "beta").read_events() == []

    again = await run_purge(client, settings)  # idempotent: nothing left, nothing recorded twice
    assert all(t.total == 0 and not t.recorded for t in again.tenants)
    assert len(Ledger(engine, "acme").read_events()) == 1


# ---- key rotation --------------------------------------------------------------------------------


def seal(vault: Vault, tenant: str, times: int = 1) -> bytes:
    out = b""
    for i in range(times):
        out = vault.seal(tenant, b"payload", dataset="d", object_id=str(i), purpose="p")
    return out


def age_key(engine: Engine, tenant: str, days: int) -> None:
    t = keystore.tenant_keys
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(t.c.tenant == tenant, t.c.kind == "data", t.c.status == "active")
            .values(created_at=NOW - timedelta(days=days))
        )


def active_versions(vault: Vault) -> dict[str, int]:
    return {k.tenant: k.version for k in vault.list_keys() if k.kind == "data" and k.status == "active"}


async def test_key_rotation_check_rotates_keys_past_the_use_share_or_age_only(
    client: Client, settings: Settings, engine: Engine, vault: Vault, worker: Worker
) -> None:
    seal(vault, "busy", times=701)  # 701 seals reserve 8 blocks of 100: 800 = 80 % of rotate_after
    seal(vault, "nearly", times=600)  # 700 reserved: under the share
    old_sealed = seal(vault, "old")
    age_key(engine, "old", days=91)
    seal(vault, "young")
    age_key(engine, "young", days=89)
    seal(vault, CODEC_TENANT)
    age_key(engine, CODEC_TENANT, days=120)
    seal(vault, "shredded")
    vault.shred("shredded")

    result: KeyRotationResult = await client.execute_workflow(
        KeyRotationCheckWorkflow.run,
        KeyRotationInput(use_share=0.8, max_age_days=90),
        id=f"{key_rotation_workflow_id()}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.control_task_queue,
        execution_timeout=timedelta(minutes=2),
    )

    assert result.checked == 5  # every active data key; the shredded tenant has none
    assert {(r.tenant, r.old_version, r.new_version, r.reason) for r in result.rotated} == {
        ("busy", 1, 2, "uses"),
        ("old", 1, 2, "age"),
        (CODEC_TENANT, 1, 2, "age"),
    }
    assert {r.tenant: r.uses_reserved for r in result.rotated}["busy"] == 800
    assert active_versions(vault) == {"busy": 2, "nearly": 1, "old": 2, "young": 1, CODEC_TENANT: 2}
    assert vault.open("old", old_sealed, dataset="d", object_id="0", purpose="p") == b"payload"
    assert vault.seal("old", b"new", dataset="d", object_id="n", purpose="p")[1:5] == (2).to_bytes(4, "big")

    again: KeyRotationResult = await client.execute_workflow(
        KeyRotationCheckWorkflow.run,
        KeyRotationInput(),
        id=f"{key_rotation_workflow_id()}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.control_task_queue,
        execution_timeout=timedelta(minutes=2),
    )
    assert again.rotated == []  # fresh keys: nothing to do


# ---- schedules -------------------------------------------------------------------------------------


@pytest.fixture
async def clean_schedules(client: Client) -> AsyncIterator[None]:
    """The schedule ids are fixed: make sure none is left on the shared dev server."""
    await _delete_schedules(client)
    yield
    await _delete_schedules(client)


async def _delete_schedules(client: Client) -> None:
    for s in await describe_maintenance_schedules(client):
        if s.installed:
            await client.get_schedule_handle(s.id).delete()


@pytest.fixture
async def crmhub_workers(client: Client, settings: Settings, deps: ActivityDeps) -> AsyncIterator[None]:
    """The worker process's own pollers (``build_workers``): the control one runs maintenance too."""
    with ThreadPoolExecutor(max_workers=settings.worker.activity_threads) as pool:
        control, regional = build_workers(client, settings, "eu", SyncActivities(deps), pool)
        async with control, regional:
            yield


async def test_schedules_are_installed_with_the_settings_intervals_and_skip_overlaps(
    client: Client, settings: Settings, engine: Engine, crmhub_workers: None, clean_schedules: None
) -> None:
    assert [s.installed for s in await describe_maintenance_schedules(client)] == [False, False, False, False]

    installed = await install_maintenance_schedules(client, settings)

    assert [(s.id, s.every, s.overlap, s.paused) for s in installed] == [
        (RETENTION_SCHEDULE_ID, timedelta(hours=6), "SKIP", False),
        (KEY_ROTATION_SCHEDULE_ID, timedelta(days=2), "SKIP", False),
        (NOTICE_DISPATCH_SCHEDULE_ID, timedelta(minutes=2), "SKIP", False),
        (INCIDENT_WATCH_SCHEDULE_ID, timedelta(minutes=15), "SKIP", False),  # the default
    ]
    for sid, workflow_type, workflow_id in (
        (RETENTION_SCHEDULE_ID, "RetentionPurgeWorkflow", retention_purge_workflow_id()),
        (KEY_ROTATION_SCHEDULE_ID, "KeyRotationCheckWorkflow", key_rotation_workflow_id()),
        (NOTICE_DISPATCH_SCHEDULE_ID, "NoticeDispatchWorkflow", notice_dispatch_workflow_id()),
        (INCIDENT_WATCH_SCHEDULE_ID, "IncidentWatchWorkflow", incident_watch_workflow_id()),
    ):
        desc = await client.get_schedule_handle(sid).describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.id, action.task_queue) == (
            workflow_type, workflow_id, settings.temporal.control_task_queue
        )  # fmt: skip
        assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP

    # Installing again updates in place: new intervals, a pause set by ops survives.
    await client.get_schedule_handle(KEY_ROTATION_SCHEDULE_ID).pause(note="ops: not now")
    changed = settings.model_copy(
        update={
            "schedules": settings.schedules.model_copy(
                update={"retention_purge_interval": timedelta(hours=1)}
            )
        }
    )
    again = await install_maintenance_schedules(client, changed)
    assert [(s.every, s.paused) for s in again] == [
        (timedelta(hours=1), False),
        (timedelta(days=2), True),
        (timedelta(minutes=2), False),
        (timedelta(minutes=15), False),
    ]

    # A trigger runs the workflow on the control queue, served by the worker process's control poller.
    add_tenant(engine, "acme", retention_days=7)
    stage(engine, "acme", "acme-expired", NOW - timedelta(hours=1))
    handle = client.get_schedule_handle(RETENTION_SCHEDULE_ID)
    await handle.trigger()
    started = None
    for _ in range(200):  # the schedule records the started workflow asynchronously
        recent = (await handle.describe()).info.recent_actions
        if recent:
            started = recent[-1].action
            break
        await asyncio.sleep(0.05)
    assert isinstance(started, ScheduleActionExecutionStartWorkflow)
    assert started.workflow_id.startswith(retention_purge_workflow_id())
    result = await client.get_workflow_handle(
        started.workflow_id, first_execution_run_id=started.first_execution_run_id,
        result_type=RetentionPurgeResult,
    ).result()  # fmt: skip
    assert [(t.tenant, t.staging_parts) for t in result.tenants] == [("acme", 1)]


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no temporal.yaml of the repository
    monkeypatch.delenv("CRMHUB_CONFIG", raising=False)
    monkeypatch.setenv("CRMHUB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CRMHUB_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CRMHUB_TEMPORAL__ADDRESS", settings.temporal.address)
    monkeypatch.setenv("CRMHUB_TEMPORAL__CONTROL_TASK_QUEUE", settings.temporal.control_task_queue)
    monkeypatch.setenv("CRMHUB_SCHEDULES__RETENTION_PURGE_INTERVAL", "PT12H")


def test_cli_installs_and_lists_the_schedules(cli_env: None, client: Client, clean_schedules: None) -> None:
    from api.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["schedules", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [s["installed"] for s in json.loads(listed.output)] == [False, False, False, False]

    installed = runner.invoke(app, ["schedules", "install", "--json"])
    assert installed.exit_code == 0, installed.output
    rows = {s["id"]: s for s in json.loads(installed.output)}
    assert set(rows) == set(MAINTENANCE_SCHEDULE_IDS)
    assert rows[RETENTION_SCHEDULE_ID]["every_s"] == 12 * 3600
    assert rows[KEY_ROTATION_SCHEDULE_ID]["every_s"] == 24 * 3600  # the default
    assert rows[NOTICE_DISPATCH_SCHEDULE_ID]["every_s"] == 60  # the default
    assert rows[INCIDENT_WATCH_SCHEDULE_ID]["every_s"] == 15 * 60  # the default
    assert {s["overlap"] for s in rows.values()} == {"SKIP"}

    table = runner.invoke(app, ["schedules", "list"])
    assert table.exit_code == 0, table.output
    assert RETENTION_SCHEDULE_ID in table.output and "active" in table.output
