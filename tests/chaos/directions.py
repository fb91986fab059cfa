"""Shared by the chaos suites that run one sync direction end to end (tokens, partial failure): the
Salesforce Contact → HubSpot contacts direction, a :class:`World` over the session dev server and
the sandbox, and a full run awaited to its end (completed or failed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from api import syncops
from connectors.oauth import OAuthService, configs_from_sandbox
from sandbox.runtime import RunningSandbox
from sandbox.tls import SandboxCA
from schemas.settings import Settings
from schemas.sync import Progress, SyncMode
from tests.e2e.test_sync_directions import Direction, World
from workers.client import connect

SF_CONTACTS_TO_HS = Direction(
    tenant="sf-contacts",
    source="salesforce",
    source_stream="Contact",
    destination="hubspot",
    destination_stream="contacts",
    mapping={"Email": "email", "FirstName": "firstname", "LastName": "lastname"},
    source_key="Email",
    destination_id="email",
    cursor_field="SystemModstamp",
)


@contextlib.asynccontextmanager
async def sync_world(settings: Settings, sandbox: RunningSandbox) -> AsyncIterator[World]:
    """A Temporal client + DB for ``settings`` and an OAuth service for the sandbox."""
    connected = await connect(settings)
    oauth = OAuthService(connected.engine, connected.vault, configs_from_sandbox(sandbox.info))
    try:
        yield World(settings, sandbox, connected, oauth, SandboxCA(Path(sandbox.info.ca_path).parent))
    finally:
        oauth.close()
        connected.engine.dispose()


async def run_full(world: World, d: Direction) -> Progress:
    """Start a full run of ``d`` and wait for its end; its progress (a failed run does not raise)."""
    client = world.connected.client
    h = await syncops.start(
        client, d.tenant, d.sync_id, mode=SyncMode.FULL, task_queue=world.settings.temporal.control_task_queue
    )
    await asyncio.wait_for(asyncio.gather(h.result(), return_exceptions=True), timeout=240)
    progress = await syncops.progress(client, d.tenant, d.sync_id)
    assert progress is not None
    return progress
