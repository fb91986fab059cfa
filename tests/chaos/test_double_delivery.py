"""Double delivery (issue 7, scenario 2): every ``push_batch`` activity runs twice — the second time
over the same staged batch, as a redelivery after a lost completion would — and the destination
does not change: the snapshot hash (every contact's properties and HubSpot id) equals that of a
single-delivery run, and no contact is duplicated.

Reduced (CI): 2,000 contacts; full (``CRMHUB_CHAOS_FULL=1``): 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from sandbox.runtime import RunningSandbox
from schemas.settings import Settings
from schemas.sync import PushInput, SyncMode, SyncStatus
from services.wiring import deps_from_settings
from store import staging as staging_store
from tests.chaos.support import size
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync
from workers.client import Connected
from workers.worker import build_workers
from workflows.activities import SyncActivities

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TENANT = "twice"
RECORDS = size(2_000, 10_000)
VOLATILE = {"lastmodifieddate", "createdate", "hs_lastmodifieddate"}


class _LostHeartbeats(ActivityOutboundInterceptor):
    """The first attempt's heartbeats never reach Temporal, so the redelivery resumes from nothing."""

    def heartbeat(self, *details: Any) -> None:
        if activity.info().activity_type != "push_batch" or activity.info().attempt > 1:
            super().heartbeat(*details)


class _Twice(ActivityInboundInterceptor):
    """Delivers every ``push_batch`` twice: the first attempt does all its work, then its completion is
    lost (a retryable failure after the staged batch is put back); the second attempt runs it again."""

    def __init__(self, next: ActivityInboundInterceptor, engine: Engine, deliveries: list[str]) -> None:
        super().__init__(next)
        self.engine = engine
        self.deliveries = deliveries

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_LostHeartbeats(outbound))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type != "push_batch":
            return await self.next.execute_activity(input)
        inp = input.args[0]
        assert isinstance(inp, PushInput)
        if info.attempt > 1:
            result = await self.next.execute_activity(input)
            self.deliveries.append(inp.batch.batch_id)
            return result

        def staged() -> list[staging_store.StagedPart]:
            with self.engine.connect() as conn:
                return staging_store.get_staged(conn, inp.plan.tenant, inp.batch.batch_id)

        def restage(parts: list[staging_store.StagedPart]) -> None:
            with self.engine.begin() as conn:
                for p in parts:
                    staging_store.put_staged(conn, p)

        parts = await asyncio.to_thread(staged)
        await self.next.execute_activity(input)
        self.deliveries.append(inp.batch.batch_id)
        await asyncio.to_thread(restage, parts)
        raise ApplicationError("chaos: the completion of this push was lost", next_retry_delay=timedelta(0))


class _TwiceInterceptor(ClientInterceptor, Interceptor):
    def __init__(self, engine: Engine, deliveries: list[str]) -> None:
        self.engine = engine
        self.deliveries = deliveries

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Twice(next, self.engine, self.deliveries)


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 1}


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": RECORDS}}


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


@contextlib.asynccontextmanager
async def _worker(
    settings: Settings, client: Any, engine: Engine, *, twice: list[str] | None
) -> AsyncIterator[None]:
    deps = deps_from_settings(settings, engine=engine)
    acts = SyncActivities(deps)
    if twice is not None:  # worker interceptors on the client reach every worker built from it
        config = client.config()
        config["interceptors"] = [*config["interceptors"], _TwiceInterceptor(engine, twice)]
        client = Client(**config)
    with ThreadPoolExecutor(max_workers=settings.worker.activity_threads) as pool:
        control, regional = build_workers(client, settings, "eu", acts, pool)
        async with control, regional:
            yield


def _snapshot(sandbox: RunningSandbox) -> tuple[int, str]:
    hs: Any = sandbox.hubspot
    rows = sorted(
        json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True, ensure_ascii=False)
        for r in hs.live_records("contacts")
    )
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


async def _run(demo: Connected, settings: Settings) -> None:
    p = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
    assert p.status is SyncStatus.COMPLETED
    assert p.counts.pulled == RECORDS and p.counts.pushed == RECORDS and p.counts.failed == 0


async def test_every_push_delivered_twice_leaves_the_destination_unchanged(settings, sandbox, demo) -> None:
    async with _worker(settings, demo.client, demo.engine, twice=None):
        await _run(demo, settings)
    count, once = _snapshot(sandbox)
    assert count == RECORDS

    deliveries: list[str] = []
    async with _worker(settings, demo.client, demo.engine, twice=deliveries):
        await _run(demo, settings)
    batches = sorted(set(deliveries))
    assert batches and all(deliveries.count(b) == 2 for b in batches), "a push was not delivered twice"
    assert _snapshot(sandbox) == (RECORDS, once), "a redelivered push changed the destination"


async def test_a_first_sync_delivered_twice_still_counts_every_contact_created(
    settings, sandbox, demo
) -> None:
    """Issue 17's "created 0, updated 9,980": into an empty HubSpot, every push's first attempt
    creates its contacts and loses its answers; the retry's upserts answer ``new: false``. The retry
    knows when the first attempt began (``Connector.retrying_since``), and HubSpot's ``createdAt``
    says those contacts were created since: the run counts them created."""
    deliveries: list[str] = []
    async with _worker(settings, demo.client, demo.engine, twice=deliveries):
        p = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
    assert p.status is SyncStatus.COMPLETED
    assert deliveries and all(deliveries.count(b) == 2 for b in set(deliveries))
    c = p.counts
    assert (c.pulled, c.pushed, c.created, c.updated, c.failed) == (RECORDS, RECORDS, RECORDS, 0, 0)
    assert _snapshot(sandbox)[0] == RECORDS
