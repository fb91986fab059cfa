"""crmhub's record counters on the SDK's Prometheus endpoint: a real worker process loop
(``run_worker`` with ``worker.metrics_port`` set, so ``make_runtime`` binds the endpoint) runs a full
and an incremental Salesforce → HubSpot sync against the sandbox CRMs through the session dev server;
the endpoint then shows ``crmhub_records_{pulled,pushed,failed,deleted}`` for the tenant with the
values the runs report."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import syncops
from sandbox.runtime import RunningSandbox, start_sandbox
from schemas.settings import Settings
from schemas.sync import RunCounts, SyncMode
from tests.ports import free_port
from tests.stack import connect_demo_tenant, stack_settings
from workers.client import Connected
from workers.worker import run_worker
from workflows.metrics import DELETED, FAILED, PULLED, PUSHED, QUARANTINED

pytestmark = pytest.mark.integration

TENANT = "metrics"
SYNC = "contacts"
CONTACTS = 60
BAD = 2  # contacts HubSpot refuses (invalid email): dead-lettered
GONE = 3  # contacts deleted at the source before the incremental run


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    return stack_settings(tmp_path / "data", db_url, temporal_env, metrics_port=free_port())


@pytest.fixture
def sandbox(settings: Settings) -> Iterator[RunningSandbox]:
    seed = {"salesforce": {"Account": 5, "Contact": CONTACTS}}
    with start_sandbox(settings.data_dir, seed_counts=seed) as sb:
        sf: Any = sb.salesforce
        for i in range(BAD):
            sf.create_record("Contact", {"FirstName": f"Bad{i}", "LastName": "Record", "Email": f"bad-{i}"})
        yield sb


@pytest.fixture
async def world(settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[Connected]:
    connected = await connect_demo_tenant(settings, sandbox, TENANT, SYNC)
    yield connected
    connected.engine.dispose()


@pytest.fixture
async def worker(settings: Settings, world: Connected) -> AsyncIterator[None]:
    """``crmhub worker --region eu`` in this process until the test ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, "eu", stop=stop))
    yield
    stop.set()
    await task


async def run(connected: Connected, settings: Settings, mode: SyncMode) -> RunCounts:
    handle = await syncops.start(
        connected.client, TENANT, SYNC, mode=mode, task_queue=settings.temporal.control_task_queue
    )
    return await asyncio.wait_for(handle.result(), timeout=300)


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def scrape(port: int) -> dict[str, dict[tuple[str, str, str], float]]:
    """``{metric: {(tenant, source, destination): value summed over the SDK's own labels}}`` of the
    crmhub counters on the endpoint."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, dict[tuple[str, str, str], float]] = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or not m["name"].startswith("crmhub_records_"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        key = (labels["tenant"], labels["source"], labels["destination"])
        out[m["name"]][key] += float(m["value"])
    return out


async def test_record_counters_reach_the_prometheus_endpoint(
    settings: Settings, sandbox: RunningSandbox, world: Connected, worker: None
) -> None:
    full = await run(world, settings, SyncMode.FULL)
    sf: Any = sandbox.salesforce
    for contact in sf.live_records("Contact")[:GONE]:
        assert sf.delete_record("Contact", contact["id"])
    incremental = await run(world, settings, SyncMode.INCREMENTAL)
    assert (full.pulled, full.pushed, full.failed) == (CONTACTS + BAD, CONTACTS, BAD)
    assert (incremental.pulled, incremental.deleted) == (0, GONE)

    port = settings.worker.metrics_port
    assert port is not None
    metrics = scrape(port)

    key = (TENANT, "salesforce", "hubspot")
    assert {name: dict(series) for name, series in metrics.items()} == {
        PULLED: {key: CONTACTS + BAD},
        PUSHED: {key: CONTACTS},
        FAILED: {key: BAD},
        DELETED: {key: GONE},
        QUARANTINED: {key: 0},  # no value broke its planned type
    }
