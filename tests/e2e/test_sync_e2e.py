"""End to end (issue 5 acceptance): the real dev server, the sandbox CRMs over HTTPS, real workers,
the database of ``db_url`` (SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL).

A 10k-contact Salesforce → HubSpot sync lands exactly the seeded records (fields outside the
instruction absent, the pseudonymized field hashed); an incremental run picks up modifications and
deletes; lineage counts equal destination counts; the ledger verifies offline. Killing the worker
process mid-sync and starting a new one loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from typing import Any

import pytest

from api import syncops
from api.demo import (
    DEMO_MAPPING,
    demo_instruction,
    lineage_summary,
    verify_ledger,
)
from governance.lineage import CheckpointSigner
from sandbox.runtime import RunningSandbox
from schemas.errors import TransientError
from schemas.sync import SyncMode, SyncStatus
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "e2e"


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Account": 50, "Contact": 10_000}}


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


def _expected_destination(sandbox: RunningSandbox) -> dict[str, dict[str, Any]]:
    sf: Any = sandbox.salesforce
    return {r["Email"]: r for r in sf.live_records("Contact")}


def _destination(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    hs: Any = sandbox.hubspot
    return list(hs.live_records("contacts"))


def _check_destination(sandbox: RunningSandbox) -> None:
    source = _expected_destination(sandbox)
    dest = _destination(sandbox)
    emails = [r["email"] for r in dest]
    assert len(emails) == len(set(emails)), "a contact was duplicated at the destination"
    assert set(emails) == set(source), "destination ≠ source"
    allowed = set(DEMO_MAPPING.values()) | {"hs_object_id", "createdate", "lastmodifieddate"}
    for r in dest:
        src = source[r["email"]]
        assert r["firstname"] == src["FirstName"]
        assert r["lastname"] == src["LastName"]
        if src.get("Phone"):
            assert r["phone"].startswith("ps_"), "the pseudonymized field arrived in clear"
            assert src["Phone"] not in r["phone"]
        present = {k for k, v in r.items() if v not in (None, "") and k != "id"}
        assert present <= allowed, f"fields outside the instruction reached HubSpot: {present - allowed}"


async def test_full_then_incremental_sync_lands_exactly_the_source(settings, sandbox, demo) -> None:
    from api.demo import _workers

    async with _workers(settings):
        full = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED
        assert full.counts.pulled == 10_000
        assert full.counts.pushed == 10_000
        assert full.counts.failed == 0
        _check_destination(sandbox)

        sf: Any = sandbox.salesforce
        ids = sorted(r["id"] for r in sf.live_records("Contact"))
        for i, cid in enumerate(ids[:40]):
            sf.update_record("Contact", cid, {"FirstName": f"Renamed{i}"})
        for cid in ids[40:65]:
            sf.delete_record("Contact", cid)
        inc = await run_sync(demo, settings, TENANT, SYNC, SyncMode.INCREMENTAL)
    assert inc.status is SyncStatus.COMPLETED
    assert inc.counts.pulled == 40
    assert inc.counts.deleted == 25
    _check_destination(sandbox)
    assert len(_destination(sandbox)) == 10_000 - 25

    summary = lineage_summary(demo.engine, TENANT)
    assert summary["counts"]["push.pushed"] == 10_000 + 40  # lineage counts = destination writes
    assert summary["counts"]["pull.records"] == 10_000 + 40
    assert summary["counts"]["pull.deleted"] == 25
    assert summary["counts"]["delete.deleted"] == 25
    signer = CheckpointSigner.load_or_create(settings.data_dir / "ledger.pem")
    result = verify_ledger(demo.engine, TENANT, signer, settings.data_dir / "report.json")
    assert result.ok, result.reason
    # The run's instruction is the one it cites.
    assert demo_instruction(TENANT).content_hash


async def test_killing_the_worker_mid_sync_loses_and_duplicates_nothing(
    settings, sandbox, demo, tmp_path
) -> None:
    env = worker_env(
        settings, pages_per_activity="1", continue_as_new_after_batches="3", heartbeat_timeout_s="5"
    )

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "api", "worker", "--region", "eu"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    worker = start_worker()
    try:
        h = await syncops.start(
            demo.client, TENANT, SYNC, mode=SyncMode.FULL, task_queue=settings.temporal.control_task_queue
        )
        p = None
        for _ in range(1200):  # kill -9 once some records have been pushed, well before the end
            with contextlib.suppress(TransientError):  # the worker may not be polling yet
                p = await syncops.progress(demo.client, TENANT, SYNC)
            if p is not None and p.counts.pushed >= 2_000:
                break
            await asyncio.sleep(0.05)
        assert p is not None and p.counts.pushed < 10_000, "the sync finished before the kill"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = start_worker()
        await asyncio.wait_for(h.result(), timeout=300)
        final = await syncops.progress(demo.client, TENANT, SYNC)  # answered by the new worker
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert final is not None and final.status is SyncStatus.COMPLETED
    assert final.counts.pulled == 10_000
    _check_destination(sandbox)  # 0 lost, 0 duplicated by external id (email)
    assert len(_destination(sandbox)) == 10_000
