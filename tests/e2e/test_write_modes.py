"""End to end (issue 14 item 3): each write mode writes what it says and nothing else, through the real
stack — dev server, sandbox CRMs over HTTPS, in-process region workers, ``db_url`` — at the vendors'
batch minimum (calls counted at the sandboxes), with skipped records counted in lineage per reason.

Salesforce contacts → HubSpot: a full ``upsert`` run, then ``crmhub sync write-mode`` switches to
``update-only`` (changed records updated by id with ``batch/update``, new ones skipped, source deletes
kept), ``create-only`` (new records created with ``batch/create``, changed ones skipped), ``mirror``
(a source delete archived at HubSpot). ``archive`` is refused for a Salesforce destination.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from schemas.errors import ConfigError
from schemas.lineage import EventKind, LineageEvent
from schemas.sync import SyncMode, SyncStatus, SyncWriteMode
from store import dead_letters as dead_letter_store
from store import syncs as sync_store
from tests.sync_support import HS_CONTACTS_TO_SF, SF_CONTACTS_TO_HS, Direction, World, create_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _writes(hs: Any) -> dict[str, int]:
    """HubSpot write calls since the last clear, by endpoint (``hs.batch.update.contacts`` → 1)."""
    counts = hs.calls.counts()
    return {
        k: n for k, n in counts.items() if k.startswith("hs.batch.") and not k.startswith("hs.batch.read")
    }


def _pushes(world: World, d: Direction) -> list[LineageEvent]:
    events = Ledger(world.connected.engine, d.tenant).read_events()
    return [e for e in events if e.kind is EventKind.PUSH]


def _deletes(world: World, d: Direction) -> list[LineageEvent]:
    events = Ledger(world.connected.engine, d.tenant).read_events()
    return [e for e in events if e.kind is EventKind.DELETE]


async def _crmhub(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def _switch(d: Direction, mode: SyncWriteMode) -> None:
    result = await _crmhub("sync", "write-mode", "--tenant", d.tenant, "--sync", d.sync_id, mode.value)
    assert result.exit_code == 0, result.output
    assert f"write mode {mode.value}" in result.output


async def test_each_write_mode_writes_only_what_it_says_at_the_batch_minimum(
    world: World, cli_env: None
) -> None:
    d = SF_CONTACTS_TO_HS
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 30})
    await create_sync(world, d, write_mode=SyncWriteMode.UPSERT)
    with world.connected.engine.connect() as conn:
        row = sync_store.get_sync(conn, d.tenant, d.sync_id)
    assert row is not None and row.spec.write_mode is SyncWriteMode.UPSERT
    ids = sorted(r["id"] for r in sf.live_records("Contact"))
    email = {i: sf.store.get("Contact", i).data["Email"] for i in ids}
    async with _workers(world.settings):
        hs.calls.clear()
        full = await world.run(d, SyncMode.FULL)
        assert full.status is SyncStatus.COMPLETED and full.counts.created == 30
        assert _writes(hs) == {"hs.batch.upsert.contacts": 1}

        # upsert keeps destination records whose source vanished (only mirror/archive delete).
        assert sf.delete_record("Contact", ids[0])
        hs.calls.clear()
        p = await world.run(d, SyncMode.INCREMENTAL)
        assert p.status is SyncStatus.COMPLETED
        assert _writes(hs) == {}
        assert email[ids[0]] in {r["email"] for r in hs.live_records("contacts")}
        assert _deletes(world, d)[-1].counts["kept_by_mode"] == 1

        # update-only: 3 changed records updated by HubSpot id (one batch/update, no read, no upsert);
        # 4 new ones skipped, counted in lineage with the reason; nothing dead-lettered.
        await _switch(d, SyncWriteMode.UPDATE_ONLY)
        for i in ids[1:4]:
            assert sf.update_record("Contact", i, {"FirstName": "Updated"})
        new = [
            sf.create_record("Contact", {"LastName": f"New{n}", "Email": f"new{n}@modes.test"})
            for n in range(4)
        ]
        hs.calls.clear()
        p = await world.run(d, SyncMode.INCREMENTAL)
        assert p.status is SyncStatus.COMPLETED, p
        assert (p.counts.updated, p.counts.created, p.counts.skipped, p.counts.failed) == (3, 0, 4, 0)
        assert _writes(hs) == {"hs.batch.update.contacts": 1}
        assert "hs.batch.read.contacts" not in hs.calls.counts()
        at_hs = {r["email"]: r for r in hs.live_records("contacts")}
        assert len(at_hs) == 30 and not {f"new{n}@modes.test" for n in range(4)} & set(at_hs)
        assert all(at_hs[email[i]]["firstname"] == "Updated" for i in ids[1:4])
        push = _pushes(world, d)[-1]
        assert push.details["write_mode"] == "update-only"
        assert push.counts["skipped"] == 4 and push.counts["skipped_not_at_destination"] == 4
        assert push.counts["updated"] == 3 and push.counts["created"] == 0

        # create-only: 2 new records created (one batch/create); 2 changed known ones skipped.
        await _switch(d, SyncWriteMode.CREATE_ONLY)
        for i in ids[4:6]:
            assert sf.update_record("Contact", i, {"FirstName": "NotWritten"})
        fresh = [
            sf.create_record("Contact", {"LastName": f"Fresh{n}", "Email": f"fresh{n}@modes.test"})
            for n in range(2)
        ]
        hs.calls.clear()
        p = await world.run(d, SyncMode.INCREMENTAL)
        assert p.status is SyncStatus.COMPLETED, p
        assert (p.counts.created, p.counts.updated, p.counts.skipped, p.counts.failed) == (2, 0, 2, 0)
        assert _writes(hs) == {"hs.batch.create.contacts": 1}
        at_hs = {r["email"]: r for r in hs.live_records("contacts")}
        assert len(at_hs) == 32 and {"fresh0@modes.test", "fresh1@modes.test"} <= set(at_hs)
        assert all(at_hs[email[i]].get("firstname") != "NotWritten" for i in ids[4:6])
        push = _pushes(world, d)[-1]
        assert push.details["write_mode"] == "create-only"
        assert push.counts["skipped_exists_at_destination"] == 2

        # mirror: a source delete is deleted (HubSpot archives) at the destination, one batch/archive.
        await _switch(d, SyncWriteMode.MIRROR)
        assert sf.delete_record("Contact", fresh[0])
        hs.calls.clear()
        p = await world.run(d, SyncMode.INCREMENTAL)
        assert p.status is SyncStatus.COMPLETED, p
        assert _writes(hs) == {"hs.batch.archive.contacts": 1}
        assert "fresh0@modes.test" not in {r["email"] for r in hs.live_records("contacts")}
        delete = _deletes(world, d)[-1]
        assert delete.counts["deleted"] == 1 and delete.details["write_mode"] == "mirror"
    assert new  # created at the source, never written by update-only
    with world.connected.engine.connect() as conn:  # skipped records are not dead letters
        assert dead_letter_store.count_dead_letters(conn, d.tenant, d.sync_id) == 0


async def test_archive_is_refused_for_a_salesforce_destination(world: World, cli_env: None) -> None:
    await create_sync(world, HS_CONTACTS_TO_SF, write_mode=SyncWriteMode.UPSERT)
    d = HS_CONTACTS_TO_SF
    refused = await _crmhub("sync", "write-mode", "--tenant", d.tenant, "--sync", d.sync_id, "archive")
    assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError)
    assert "has no archive" in str(refused.exception) and "choose 'mirror'" in str(refused.exception)
    with world.connected.engine.connect() as conn:
        row = sync_store.get_sync(conn, d.tenant, d.sync_id)
    assert row is not None and row.spec.write_mode is SyncWriteMode.UPSERT  # unchanged
    await _switch(d, SyncWriteMode.MIRROR)
