"""Tokens (issue 7, scenario 4): the source's access token dies in the middle of a real sync — the
dev server, the sandbox CRMs over HTTPS, in-process region workers, OAuth connections, ``db_url``.

The sandbox control ``POST /__sandbox/oauth/expire {"endpoint": …, "at_call": k}`` expires every
access token of the source CRM as the k-th page request arrives, so that very request is refused
(Salesforce 401 INVALID_SESSION_ID, HubSpot 401 EXPIRED_AUTHENTICATION). Checked, for a Salesforce
source (REST query pages) and a HubSpot source (list pages):

* exactly 1 call to the source's token endpoint (the refresh) during the run;
* the read resumes at page k: the call log shows the refused request and then the *same* request
  (path + query: the same keyset / ``after``) answered with the new token — every other page asked
  for once, page 1 not again;
* destination = source, 0 duplicates by external id.

A refresh token revoked at page k instead: the run fails with "reauthorization required" after
exactly 1 token call and no further page request (no retry storm); the connection is marked
``reauthorization_required``; ``crmhub sync status`` and ``crmhub connections list`` say so.

50 concurrent expiries → 1 token call (threads, services, processes): tests/services/test_credentials.py
``test_50_concurrent_expiries_*``.

Reduced (CI): 8,000 Salesforce / 1,000 HubSpot contacts; full (``CRMHUB_CHAOS_FULL=1``): 40,000 / 3,000.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.demo import _workers
from sandbox.faults import CallRecord
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from store import connections as connection_store
from store.connections import ConnectionStatus
from tests.chaos.support import size
from tests.sync_support import (
    HS_CONTACTS_TO_SF,
    SF_CONTACTS_TO_HS,
    Direction,
    World,
    check_destination,
    create_sync,
    source_records,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SF_RECORDS = size(8_000, 40_000)  # 2,000 per query page
HS_RECORDS = size(1_000, 3_000)  # 100 per list page
PAGE_K = 3

SF_SOURCE = dataclasses.replace(SF_CONTACTS_TO_HS, tenant="tok-sf")
HS_SOURCE = dataclasses.replace(HS_CONTACTS_TO_SF, tenant="tok-hs")
# The source's page requests: Salesforce keyset queries, HubSpot list pages.
PAGE_ENDPOINT = {"salesforce": "sf.query", "hubspot": "hs.list.contacts"}


def _is_page(source: str, call: CallRecord) -> bool:
    if call.endpoint != PAGE_ENDPOINT[source]:
        return False
    return source != "salesforce" or "ORDER+BY" in call.target or "ORDER%20BY" in call.target


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2}


def _arm(world: World, crm: str, *, at_call: int, revoke_refresh: bool = False) -> None:
    """Arm the sandbox's expiry trigger through its control API (as an operator would)."""
    info = world.sandbox.info
    url = info.salesforce_url if crm == "salesforce" else info.hubspot_url
    token = info.salesforce_control_token if crm == "salesforce" else info.hubspot_control_token
    body = {"endpoint": PAGE_ENDPOINT[crm], "at_call": at_call, "revoke_refresh": revoke_refresh}
    r = httpx.post(
        f"{url}/__sandbox/oauth/expire",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        verify=world.ca.client_context(),
    )
    assert r.status_code == 204, r.text


def _pages(world: World, d: Direction) -> list[CallRecord]:
    return [c for c in world.crm(d.source).calls.all() if _is_page(d.source, c)]


async def _expiry_at_page_k_resumes_there(world: World, d: Direction, records: int, per_page: int) -> None:
    source = world.crm(d.source)
    source.seed({d.source_stream: records})
    await create_sync(world, d)
    # Salesforce's first page also counts the read (no COUNT() call): call k is page k at both.
    _arm(world, d.source, at_call=PAGE_K)
    token_calls = source.oauth.token_calls
    source.calls.clear()
    async with _workers(world.settings):
        p = await world.run(d, SyncMode.FULL, may_fail=True)
    assert p.status is SyncStatus.COMPLETED, p.message
    assert (p.counts.pulled, p.counts.pushed, p.counts.failed) == (records, records, 0)
    assert source.oauth.token_calls - token_calls == 1, "expected exactly one refresh"

    pages = _pages(world, d)
    refused = [i for i, c in enumerate(pages) if c.status == 401]
    assert refused == [PAGE_K - 1], [(c.status, c.target[-80:]) for c in pages]
    again = pages[PAGE_K]
    assert again.status == 200 and again.target == pages[PAGE_K - 1].target, "page k was not asked again"
    assert again.token != pages[PAGE_K - 1].token, "the repeat did not carry the refreshed token"
    assert pages[0].target != again.target  # resumed at page k, not at page 1
    answered = [c.target for c in pages if c.status == 200]
    assert len(answered) == len(set(answered)), "a page was read twice: the read restarted"
    # Salesforce asks once more after a full last page (an empty keyset page); HubSpot's last page
    # carries no paging.next.
    assert len(answered) == records // per_page + (d.source == "salesforce")
    check_destination(world, d, source_records(world, d))


async def test_salesforce_token_expiry_at_page_k_resumes_at_page_k(world: World) -> None:
    await _expiry_at_page_k_resumes_there(world, SF_SOURCE, SF_RECORDS, 2_000)


async def test_hubspot_token_expiry_at_page_k_resumes_at_page_k(world: World) -> None:
    await _expiry_at_page_k_resumes_there(world, HS_SOURCE, HS_RECORDS, 100)


def _cli(settings: Settings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(
        CRMHUB_DATA_DIR=str(settings.data_dir),
        CRMHUB_DATABASE_URL=settings.effective_database_url,
        CRMHUB_TEMPORAL__ADDRESS=settings.temporal.address,
        PYTHONPATH=str(REPO),
        COLUMNS="250",
    )
    done = subprocess.run(
        [sys.executable, "-m", "api", *args],
        env=env,
        cwd=settings.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


async def test_refresh_token_revoked_mid_sync_stops_with_reauthorization_required(world: World) -> None:
    d = SF_SOURCE
    sf = world.sf
    sf.seed({"Contact": SF_RECORDS})
    await create_sync(world, d)
    _arm(world, "salesforce", at_call=PAGE_K, revoke_refresh=True)
    token_calls = sf.oauth.token_calls
    sf.calls.clear()
    settings = world.settings
    async with _workers(settings):
        p = await world.run(d, SyncMode.FULL, may_fail=True)
        status_out = await asyncio.to_thread(_cli, settings, "sync", "status", "--tenant", d.tenant,
                                             "--sync", d.sync_id)  # fmt: skip
    list_out = await asyncio.to_thread(_cli, world.settings, "connections", "list", "--tenant", d.tenant)

    assert p.status is SyncStatus.FAILED
    assert "reauthoriz" in p.message.lower()
    assert sf.oauth.token_calls - token_calls == 1, "a dead refresh token was retried"
    pages = _pages(world, d)
    assert [c.status for c in pages] == [200] * (PAGE_K - 1) + [401], "requests after the refusal"
    assert p.counts.pulled < SF_RECORDS

    with world.connected.engine.connect() as conn:
        rows = {r.provider: r for r in connection_store.list_connections(conn, tenant=d.tenant)}
    assert rows["salesforce"].status is ConnectionStatus.REAUTHORIZATION_REQUIRED
    assert rows["hubspot"].status is ConnectionStatus.ACTIVE
    assert "failed" in status_out and "reauthoriz" in status_out.lower(), status_out
    assert f"crmhub connect salesforce --tenant {d.tenant}" in status_out.replace("\n", " "), status_out
    assert "reauthorization_required" in list_out, list_out
    assert rows["salesforce"].id in list_out and "active" in list_out
