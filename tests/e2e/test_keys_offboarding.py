"""``crmhub keys list|rotate|rewrap`` (each an access event in the ledger) and ``crmhub tenant
offboard`` on a tenant that really synced: export → delete → crypto-shred → deletion certificate,
and nothing of the tenant opens afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.demo import _workers
from api.offboard import open_dead_letter
from governance.lineage import Ledger
from governance.vault import TenantKeysDestroyed, Vault
from sandbox.runtime import RunningSandbox
from schemas.errors import IntegrityError
from schemas.lineage import EventKind
from schemas.settings import Settings
from schemas.sync import SyncMode, SyncStatus
from services.wiring import key_provider
from store import dead_letters as dead_letter_store
from tests.sync_support import DEMO_SYNC as SYNC
from tests.sync_support import run_sync
from workers.client import Connected

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "leaving"
BAD = 3


@pytest.fixture
def seed_counts() -> dict[str, dict[str, int]]:
    return {"salesforce": {"Contact": 200}}


@pytest.fixture
def sandbox(sandbox: RunningSandbox) -> RunningSandbox:
    for i in range(BAD):  # HubSpot refuses these: they become dead letters held (sealed) by crmhub
        sandbox.salesforce.create_record("Contact", {"LastName": f"Bad{i}", "Email": f"not-an-email-{i}"})
    return sandbox


@pytest.fixture
def demo_tenant() -> str:
    return TENANT


@pytest.fixture
async def synced(settings: Settings, demo: Connected) -> Connected:
    async with _workers(settings):
        progress = await run_sync(demo, settings, TENANT, SYNC, SyncMode.FULL)
    assert progress.status is SyncStatus.COMPLETED
    assert progress.counts.failed == BAD
    return demo


def _crmhub(settings: Settings, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(CRMHUB_DATA_DIR=str(settings.data_dir), CRMHUB_DATABASE_URL=settings.effective_database_url)
    res = subprocess.run(
        [sys.executable, "-m", "api", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


async def test_rotate_then_offboard(settings: Settings, synced: Connected, tmp_path: Path) -> None:
    keys = _crmhub(settings, "keys", "list", "--tenant", TENANT)
    assert {k["kind"] for k in keys} >= {"data"}
    rotated = _crmhub(settings, "keys", "rotate", "--tenant", TENANT)
    assert rotated["version"] == 2
    active = [
        k
        for k in _crmhub(settings, "keys", "list", "--tenant", TENANT)
        if k["kind"] == "data" and k["status"] == "active"
    ]
    assert [k["version"] for k in active] == [2]
    # a new KEK: every live key of every tenant rewrapped, each tenant's ledger says so
    live = [k for k in _crmhub(settings, "keys", "list", "--tenant", TENANT) if k["status"] != "destroyed"]
    rewrapped = _crmhub(settings, "keys", "rewrap")
    assert rewrapped["per_tenant"][TENANT] == len(live)
    assert {k["kek_id"] for k in _crmhub(settings, "keys", "list", "--tenant", TENANT)} == {
        rewrapped["to_kek_id"]
    }
    touches = [
        (e.details["action"], e.details["target"], dict(e.counts))
        for e in Ledger(synced.engine, TENANT).read_events()
        if e.kind is EventKind.ACCESS
    ]
    target = f"KEK {', '.join(rewrapped['from_kek_ids'])} → {rewrapped['to_kek_id']}"
    assert touches[-2:] == [("key_rotate", "data key v2", {}), ("key_rewrap", target, {"keys": len(live)})]

    with synced.engine.connect() as conn:
        letters = dead_letter_store.list_dead_letters(conn, TENANT, SYNC)
    assert len(letters) == BAD
    assert open_dead_letter(synced.vault, letters[0], "crm-sync")  # readable before offboarding

    out = tmp_path / "offboard"
    cert = _crmhub(settings, "tenant", "offboard", "--tenant", TENANT, "--out", str(out), "--yes")
    assert cert["tenant"] == TENANT
    assert cert["stores"]["dead_letters"] == BAD
    assert cert["keys"]["keys_destroyed"] >= 2  # both data-key versions (and the pseudonym key)
    export = out / cert["export"]["file"]
    assert export.stat().st_mode & 0o777 == 0o600
    exported = json.loads(export.read_text())
    assert sum(len(s["dead_letters"]) for s in exported["syncs"]) == BAD
    assert (out / f"{TENANT}-deletion-certificate.json").stat().st_mode & 0o777 == 0o600

    # Nothing of the tenant is held in the clear, and nothing sealed for it opens any more.
    with synced.engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, TENANT, SYNC) == 0
    fresh = Vault(synced.engine, key_provider(settings))  # a process that did not cache the keys
    with pytest.raises((TenantKeysDestroyed, IntegrityError)):
        open_dead_letter(fresh, letters[0], "crm-sync")
    with pytest.raises((TenantKeysDestroyed, IntegrityError)):
        fresh.seal(TENANT, b"x", dataset="d", object_id="o", purpose="p")
    # The ledger records the erasure and still verifies.
    events = Ledger(synced.engine, TENANT).read_events()
    assert events[-1].kind is EventKind.ERASE
    assert events[-1].counts["keys_destroyed"] == cert["keys"]["keys_destroyed"]
