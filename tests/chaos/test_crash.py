"""Crash (issue 7, scenario 1): kill -9 the worker process at seeded random points of a full
Salesforce → HubSpot sync, and restart the Temporal dev server once mid-run.

The run uses a dedicated dev server (free ports, SQLite history file under the test's data dir, so
the history survives the restart) and worker subprocesses. Kill points are seeded counts of
contacts landed at HubSpot; pulls overlap pushes, so kills land in both and between them. Checked:
the run completes; destination = source (0 lost, 0 duplicated by external id); lineage push/pull
counts = destination; the cursor seen in progress never moves backwards; the ledger verifies.

Then, in a fresh worker, the late-commit phase of issue 13 (:mod:`tests.chaos.late_phase`): contacts
updated with every third write committed after the first incremental run passed it, two merges,
two incremental runs — 0 lost, every change pushed once, the losers gone, calls bounded. HubSpot's
production faults are on throughout (tests/chaos/conftest.py).

Reduced (CI): 5 kills over 10,000 records, 300 late-phase updates. Full (``CRMHUB_CHAOS_FULL=1``):
50 kills over 100,000, 3,000 updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError

from api import syncops
from api.demo import lineage_summary, verify_ledger
from governance.lineage import CheckpointSigner
from sandbox import faithful
from sandbox.runtime import RunningSandbox
from schemas.errors import TransientError
from schemas.settings import Settings, load_settings
from schemas.sync import SyncMode, SyncStatus
from tests.chaos.late_phase import late_commits_and_merges
from tests.chaos.support import size
from tests.ports import free_port
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import worker_env
from workers.devserver import start_dev_server, stop_dev_server

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

TENANT = "chaos"
RECORDS = size(10_000, 100_000)
KILLS = size(5, 50)
UPDATES = size(300, 3_000)  # the late-commit phase
SEED = 7


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Iterator[Settings]:
    """A dev server of this test's own on free ports, persisting to a SQLite file."""
    port = free_port()
    s = load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        temporal={
            "address": f"127.0.0.1:{port}",
            "control_task_queue": "chaos-control",
            "dev_server": {"port": port, "ui_port": free_port(), "db_filename": "chaos-temporal.db"},
        },
        regions={
            "eu": {"task_queue": "chaos-eu", "jurisdiction": "EEA"},
            "us": {"task_queue": "chaos-us", "jurisdiction": "US"},
        },
    )
    start_dev_server(s)
    try:
        yield s
    finally:
        stop_dev_server(s)


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Account": 50, "Contact": RECORDS}}


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


def _finished(done: asyncio.Future[Any]) -> bool:
    """The run's result arrived (not a poll broken by the dev-server restart)."""
    return done.done() and not (done.exception() is not None and isinstance(done.exception(), RPCError))


def _landed(sandbox: RunningSandbox) -> int:
    hs: Any = sandbox.hubspot
    return int(hs.store.objects().get("contacts", 0))


async def test_kill_9_at_seeded_points_loses_and_duplicates_nothing(
    settings, sandbox, demo, tmp_path
) -> None:
    assert faithful.is_on(sandbox)
    env = worker_env(
        settings, pages_per_activity="1", continue_as_new_after_batches="3", heartbeat_timeout_s="3"
    )
    log = (tmp_path / "worker.log").open("ab")

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "api", "worker", "--region", "eu"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    # Seeded kill points: how many contacts HubSpot holds (pulls of the next batch overlap the push of
    # the last, so kills land in pulls, pushes and between them); all well before the end.
    rng = random.Random(SEED)
    points = sorted(rng.sample(range(1, RECORDS * 97 // 100), KILLS))
    restart_server_at = KILLS // 2

    cursors: list[str] = []

    async def watch_cursor() -> None:
        """Note each new cursor the progress query shows. A query can wait seconds on a killed
        worker or a restarting server, so it runs beside the kill loop, never in its way (a kill
        loop that waited on it once saw the run finish before the last kill point)."""
        while True:
            with contextlib.suppress(TransientError, RuntimeError, RPCError, TimeoutError):
                p = await asyncio.wait_for(syncops.progress(demo.client, TENANT, SYNC), timeout=5)
                if p is not None and p.cursor and (not cursors or cursors[-1] != p.cursor):
                    cursors.append(p.cursor)
            await asyncio.sleep(0.05)

    kills = 0
    started = time.monotonic()
    worker = start_worker()
    watcher: asyncio.Task[None] | None = None
    try:
        h = await syncops.start(
            demo.client, TENANT, SYNC, mode=SyncMode.FULL, task_queue=settings.temporal.control_task_queue
        )
        watcher = asyncio.create_task(watch_cursor())
        done = asyncio.ensure_future(h.result())
        while kills < KILLS and not _finished(done):
            if done.done():  # the long poll broke on the server restart: poll again
                done = asyncio.ensure_future(h.result())
            assert time.monotonic() - started < 900, f"stuck after {kills} kills"
            if _landed(sandbox) >= points[kills]:
                worker.send_signal(signal.SIGKILL)
                await asyncio.to_thread(worker.wait, 10)
                kills += 1
                if kills == restart_server_at:
                    await asyncio.to_thread(stop_dev_server, settings)
                    await asyncio.to_thread(start_dev_server, settings)
                worker = start_worker()
            await asyncio.sleep(0.02)
        # A result poll opened before the dev server's restart can hang on the old connection
        # without ever failing (seen once: the run completed at 01:18, the poll waited until the
        # test's 600 s timeout): wait in short slices and open a fresh poll after each.
        deadline = time.monotonic() + 600
        while True:
            with contextlib.suppress(RPCError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), timeout=15)
                break
            assert time.monotonic() < deadline, "the run did not finish within 600 s of the last kill"
            done.cancel()
            await asyncio.sleep(0.5)
            done = asyncio.ensure_future(h.result())
        final = await syncops.progress(demo.client, TENANT, SYNC)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
    assert kills == KILLS, f"the sync finished after only {kills} of {KILLS} kills"
    assert final is not None and final.status is SyncStatus.COMPLETED
    assert final.counts.pulled == RECORDS

    sf: Any = sandbox.salesforce
    hs: Any = sandbox.hubspot
    source = {r["Email"] for r in sf.live_records("Contact")}
    emails = [r["email"] for r in hs.live_records("contacts")]
    assert len(emails) == len(set(emails)), "a contact was duplicated at the destination"
    assert set(emails) == source, f"lost {len(source - set(emails))} contacts"
    assert cursors, "progress never showed a cursor"
    assert cursors == sorted(cursors), f"the cursor moved backwards: {cursors}"

    summary = lineage_summary(demo.engine, TENANT)
    assert summary["counts"]["push.pushed"] == len(emails)  # lineage counts = destination
    assert summary["counts"]["pull.records"] == RECORDS
    signer = CheckpointSigner.load_or_create(settings.data_dir / "ledger.pem")
    result = verify_ledger(demo.engine, TENANT, signer, settings.data_dir / "report.json")
    assert result.ok, result.reason
    print(f"crash: {RECORDS} records, {kills} kills, {time.monotonic() - started:.1f} s")

    log = (tmp_path / "worker.log").open("ab")  # the late-commit phase, in a fresh worker
    worker = start_worker()
    try:
        line = await late_commits_and_merges(demo, settings, sandbox, TENANT, UPDATES)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
    print(f"crash, {line}")  # the figures of docs/RELIABILITY.md row 1 (pytest -s)
