"""Helpers for tests that run the whole stack: settings aimed at the session dev server with fresh
task queues, the OAuth clients of a running sandbox (read from the clients file it wrote, as crmhub
reads any deployment's), and a tenant with both sandbox CRMs connected through OAuth and the demo sync.

The fixtures built on them (settings, sandbox, world, demo) and the sync helpers of tests/e2e and
tests/chaos are in tests/sync_support.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from api.demo import connect_crm, create_demo_sync
from connectors.oauth import OAuthProviderConfig
from sandbox.runtime import RunningSandbox
from sandbox.tls import SandboxCA
from schemas.settings import Settings, load_settings
from services.credentials import OAuthService
from services.oauth_clients import configs_of, read_clients_file
from workers.client import Connected, connect


def sandbox_oauth_configs(
    sandbox: RunningSandbox, *, redirect_uri: str | None = None
) -> list[OAuthProviderConfig]:
    """[Salesforce, HubSpot] configs of a running sandbox, from the OAuth clients file it wrote,
    through :mod:`services.oauth_clients`; ``redirect_uri`` must be one it registered (default: the
    CLI's when registered, else its first)."""
    clients = read_clients_file(sandbox.clients_file)
    assert clients is not None, f"the sandbox wrote no {sandbox.clients_file}"
    return configs_of(clients, origin=str(sandbox.clients_file), redirect_uri=redirect_uri)


def stack_settings(data_dir: Path, db_url: str, temporal_env: Any, **worker: Any) -> Settings:
    """Settings for this test's database and the session dev server, with task queues of its own."""
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=data_dir,
        database_url=db_url,
        temporal={
            "address": temporal_env.client.service_client.config.target_host,
            "control_task_queue": f"control-{suffix}",
        },
        regions={
            "eu": {"task_queue": f"eu-{suffix}", "jurisdiction": "EEA"},
            "us": {"task_queue": f"us-{suffix}", "jurisdiction": "US"},
        },
        worker=worker,
    )


async def connect_demo_tenant(
    settings: Settings, sandbox: RunningSandbox, tenant: str, sync_id: str
) -> Connected:
    """A Temporal client + DB for ``settings``; ``tenant`` with both CRMs connected by OAuth and the
    demo's Salesforce → HubSpot contacts sync. Dispose ``.engine`` when done."""
    connected = await connect(settings)
    oauth = OAuthService(connected.engine, connected.vault, sandbox_oauth_configs(sandbox))
    try:
        ca = SandboxCA(Path(sandbox.info.ca_path).parent)
        sf = await asyncio.to_thread(connect_crm, oauth, tenant, "salesforce", ca)
        hs = await asyncio.to_thread(connect_crm, oauth, tenant, "hubspot", ca)
        create_demo_sync(connected.engine, tenant=tenant, sf_connection=sf, hs_connection=hs, sync_id=sync_id)
    finally:
        oauth.close()
    return connected
