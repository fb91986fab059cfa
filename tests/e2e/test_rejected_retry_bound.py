"""End to end: a run retries at most ``worker.retry_rejected_per_run`` dead letters (here 2 of 3),
oldest first, counted in its counts; the rest go with the next run — one HubSpot batch/read each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.demo import _workers
from schemas.sync import SyncMode
from store import syncs as sync_store
from tests.e2e.test_rejected_retry_changes import BAD, _letters, _refused_full_run, _seed, d
from tests.sync_support import World, check_ledger, create_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2, "continue_as_new_after_batches": 3, "retry_rejected_per_run": 2}


async def test_at_most_n_letters_a_run_the_rest_with_the_next(world: World) -> None:
    bad = _seed(world)
    await create_sync(world, d)
    async with _workers(world.settings):
        letters = await _refused_full_run(world, bad)
        with world.connected.engine.begin() as conn:
            mapping = {**d.mapping, "jobtitle": "Title"}
            sync_store.set_sync_mapping(conn, d.tenant, d.sync_id, mapping, now=datetime.now(UTC))
        done: list[tuple[int, int, int]] = []
        for _ in range(3):
            world.hs.calls.clear()
            run = await world.run(d, SyncMode.INCREMENTAL)
            reads = world.hs.calls.counts().get("hs.batch.read.contacts", 0)
            done.append((run.counts.retried, run.counts.retry_resolved, reads))
    assert done == [(2, 2, 1), (1, 1, 1), (0, 0, 0)]
    assert BAD == 3 and _letters(world) == []
    assert {r["External_Id__c"] for r in world.sf.live_records("Contact")} >= set(bad)
    assert len(letters) == BAD
    check_ledger(world, d)
