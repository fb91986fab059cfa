"""Leaks (issue 7, scenario 9): canary PII in the source CRM and the live OAuth tokens of the tenant's
connections, then a demo-scale full sync with in-process workers; afterwards the canaries are
searched in the database's raw bytes (SQLite file + WAL; on PostgreSQL every row of every table as
text, bytea also hex-decoded), in every log record emitted during the run, and in the full Temporal
histories of every run of the sync (payloads, failures, memo, search attributes, ids) plus their
descriptions: 0 hits. (The control — the canaries do show up without the codec — is
tests/workers/test_converter.py ``test_history_holds_no_canary_when_encrypted``.)

Reduced (CI): 5,000 contacts; full (``CRMHUB_CHAOS_FULL=1``): 10,000.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from temporalio.api.history.v1 import History

from api.demo import _workers
from sandbox.runtime import RunningSandbox
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus, sync_workflow_id
from tests.chaos.support import size
from tests.stack import connect_demo_tenant
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

TENANT = "leak"
RECORDS = size(5_000, 10_000)
PII = {  # Salesforce Contact field → canary (Email and FirstName are allowed, Phone pseudonymized,
    # Title withheld by the instruction)
    "Email": "ada.canary.7f3a@example.invalid",
    "FirstName": "Canaryada7f3a",
    "Phone": "+49 30 7733 7f3a",
    "Title": "Chief Canary Officer 7f3a",
}


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 1, "continue_as_new_after_batches": 1}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": RECORDS}}


@pytest.fixture
def sandbox(sandbox: RunningSandbox) -> RunningSandbox:
    sf: Any = sandbox.salesforce
    ids = sorted(r["id"] for r in sf.live_records("Contact"))
    for n, cid in enumerate(ids[:: max(len(ids) // 5, 1)][:5]):
        sf.update_record("Contact", cid, {k: v.replace("7f3a", f"7f3a{n}") for k, v in PII.items()})
    return sandbox


def _db_text(settings: Settings, engine: Any) -> bytes:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    out = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for (row,) in conn.execute(text(f'SELECT t::text FROM "{table}" t')):  # noqa: S608 - names from the catalog
                out.append(row.encode())
                # bytea renders as \x…: decode those runs too
                for chunk in row.split("\\\\x")[1:] + row.split("\\x")[1:]:
                    hexpart = chunk.split('"')[0].split(",")[0].split(")")[0]
                    with contextlib.suppress(ValueError):
                        out.append(bytes.fromhex(hexpart))
    return b"\n".join(out)


async def test_no_canary_in_database_logs_or_histories(settings, sandbox, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    # Connected here, not by the demo fixture: the OAuth exchange's log records are searched too.
    world = await connect_demo_tenant(settings, sandbox, TENANT, SYNC)
    try:
        async with _workers(settings):
            p = await run_sync(world, settings, TENANT, SYNC, SyncMode.FULL)
        assert p.status is SyncStatus.COMPLETED and p.counts.pushed == RECORDS
        hs: Any = sandbox.hubspot
        assert any(r["email"].startswith("ada.canary.7f3a") for r in hs.live_records("contacts"))

        histories = b""
        runs = 0
        async for wf in world.client.list_workflows(f'WorkflowId = "{sync_workflow_id(TENANT, SYNC)}"'):
            handle = world.client.get_workflow_handle(wf.id, run_id=wf.run_id)
            history = await handle.fetch_history()
            desc = await handle.describe()
            histories += History(events=history.events).SerializeToString() + history.to_json().encode()
            histories += desc.raw_description.SerializeToString()
            runs += 1
        assert runs >= 2, "expected continue-as-new runs"
        database = _db_text(settings, world.engine)
    finally:
        world.engine.dispose()

    sf: Any = sandbox.salesforce
    hs = sandbox.hubspot
    tokens = [*sf.oauth._access, *sf.oauth._refresh, *hs.oauth._access, *hs.oauth._refresh]
    assert tokens
    canaries = [v.replace("7f3a", f"7f3a{n}") for v in PII.values() for n in range(5)] + tokens
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records).encode()
    assert len(database) > 10_000 and histories and logs
    hits = {
        where: [c for c in canaries if c.encode() in blob]
        for where, blob in (("database", database), ("logs", logs), ("histories", histories))
    }
    assert hits == {"database": [], "logs": [], "histories": []}
