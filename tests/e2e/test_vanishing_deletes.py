"""End to end (issue 13 item 4): deletes that never appear as deletes reach the destination, through
the real stack — dev server, sandbox CRMs over HTTPS, in-process region workers, ``db_url``.

* merges: a HubSpot merge (a new record absorbs two) → the losers' Salesforce contacts deleted, the
  winner's created; a Salesforce merge → HubSpot, where a loser that shared its master's e-mail was
  upserted into the master's contact: the merge guard keeps that contact and drops only the mapping;
* a Salesforce recycle bin emptied before the next run → the run sets ``reconcile`` → the automatic
  reconciliation deletes exactly the purged records at HubSpot — after a listing that fails (a
  sandbox fault) deleted nothing; a dry run counts; the fraction guard refuses a mass delete until
  ``force``;
* a HubSpot GDPR delete (reported by nothing) → the reconciliation's schedule deletes it at Salesforce.

API calls are counted at the sandboxes: listing pages and delete batches at their minimum.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from typer.testing import CliRunner, Result

from api import reconcileops
from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from sandbox.faults import FaultPlan, FaultRule
from schemas.lineage import EventKind
from schemas.reconcile import ReconcileOutcome, ReconcileResult, reconcile_workflow_id
from schemas.sync import SyncMode, SyncStatus
from services.syncconfig import sync_health
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import reconcile as reconcile_store
from tests.e2e.test_sync_directions import _stamped_after
from tests.sync_support import (
    HS_CONTACTS_TO_SF,
    SF_CONTACTS_TO_HS,
    Direction,
    World,
    check_destination,
    check_ledger,
    create_sync,
    source_records,
    worker_env,
)
from workflows.merges import HELD
from workflows.reconcile import ReconcileWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2, "continue_as_new_after_batches": 3, "reconcile_list_attempts": 2}


def _calls(crm: Any, prefix: str) -> int:
    return sum(n for name, n in crm.calls.counts().items() if name.startswith(prefix))


def _events(world: World, d: Direction, kind: EventKind) -> list[Any]:
    return [e for e in Ledger(world.connected.engine, d.tenant).read_events() if e.kind is kind]


async def _last_run(client: Client, d: Direction) -> str | None:
    try:
        desc = await client.get_workflow_handle(reconcile_workflow_id(d.tenant, d.sync_id)).describe()
    except RPCError:
        return None
    return desc.run_id


async def _reconciled(world: World, d: Direction, *, before: str | None) -> tuple[str, ReconcileResult]:
    """The reconciliation a sync run started (a run other than ``before``), awaited to its end."""
    client = world.connected.client
    run_id = await _last_run(client, d)
    assert run_id is not None and run_id != before, "the run started no reconciliation"
    handle = client.get_workflow_handle_for(ReconcileWorkflow.run, reconcile_workflow_id(d.tenant, d.sync_id))
    return run_id, await asyncio.wait_for(handle.result(), timeout=180)


async def _wait_for_start(world: World, d: Direction, before: str | None) -> None:
    """Until a reconciliation other than ``before`` exists (a schedule starts it asynchronously)."""
    for _ in range(100):
        if await _last_run(world.connected.client, d) not in (None, before):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the schedule started no reconciliation")


async def _reconcile(world: World, d: Direction, **options: bool) -> ReconcileResult:
    """A manual reconciliation (``crmhub sync reconcile``), awaited."""
    handle = await reconcileops.start(
        world.connected.client,
        d.tenant,
        d.sync_id,
        task_queue=world.settings.temporal.control_task_queue,
        **options,
    )
    return await asyncio.wait_for(handle.result(), timeout=180)


async def _crmhub(*args: str) -> Result:
    """``crmhub ARGS`` in-process (its own event loop, on a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def _incremental(world: World, d: Direction) -> None:
    p = await world.run(d, SyncMode.INCREMENTAL)
    assert p.status is SyncStatus.COMPLETED, p


async def test_a_hubspot_merge_deletes_the_losers_at_salesforce_and_keeps_the_winner(world: World) -> None:
    d = HS_CONTACTS_TO_SF
    hs, sf = world.hs, world.sf
    hs.seed({"contacts": 60})
    await create_sync(world, d)
    async with _workers(world.settings):
        full = await world.run(d, SyncMode.FULL)
        assert (full.counts.pulled, full.counts.pushed) == (60, 60)
        primary, other = sorted((r["id"] for r in hs.live_records("contacts")), key=int)[:2]
        with _stamped_after(hs, full):
            winner = hs.merge_records("contacts", primary, other)
        await _incremental(world, d)
    assert winner not in (primary, other)
    at_sf = {r["External_Id__c"] for r in sf.live_records("Contact")}
    assert winner in at_sf and not {primary, other} & at_sf  # the losers' records deleted
    assert len(at_sf) == 60 - 2 + 1
    check_destination(world, d, source_records(world, d))  # nothing lost: the winner holds the merge
    (merge,) = _events(world, d, EventKind.MERGE)
    assert merge.counts == {"merged": 2, "deleted": 2, "kept": 0, "held": 0}
    assert len(merge.record_id_hashes) == 2 and merge.details["winners"].count(",") == 1
    counts = check_ledger(world, d)
    assert counts["delete.deleted"] == 2


async def test_a_salesforce_merge_reaches_hubspot_and_the_guard_keeps_a_shared_contact(world: World) -> None:
    d = SF_CONTACTS_TO_HS
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 60})
    await create_sync(world, d)
    async with _workers(world.settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.counts.pushed == 60
        a, b, c = sorted(r["id"] for r in sf.live_records("Contact"))[:3]
        email_a, email_b, email_c = (sf.store.get("Contact", i).data["Email"] for i in (a, b, c))
        # A duplicate of A (same e-mail): HubSpot upserts it into A's contact, both keys map there.
        dup = sf.create_record("Contact", {"LastName": "Duplicate", "Email": email_a})
        await _incremental(world, d)
        # The full read marked when it began, so the first look at the delete log finds it covered:
        # records older than the recycle bin's 15 days are no reason to reconcile.
        assert await _last_run(world.connected.client, d) is None
        assert len(hs.live_records("contacts")) == 60
        sf.merge_records("Contact", a, [dup], {"LastName": "Merged"})
        sf.merge_records("Contact", b, [c])
        await _incremental(world, d)
    emails = {r["email"] for r in hs.live_records("contacts")}
    assert email_a in emails and email_b in emails and email_c not in emails
    assert len(emails) == 59
    check_destination(world, d, source_records(world, d))
    (merge,) = _events(world, d, EventKind.MERGE)
    assert merge.counts == {"merged": 2, "deleted": 1, "kept": 1, "held": 0}  # dup's contact is A's: kept
    with world.connected.engine.connect() as conn:  # the loser's mapping dropped, the master's kept
        assert id_map_store.lookup_id_map(conn, d.tenant, d.sync_id, merge.record_id_hashes) == {}
    check_ledger(world, d)


async def test_a_loser_whose_winner_is_refused_waits_and_goes_when_the_winner_lands(world: World) -> None:
    d = SF_CONTACTS_TO_HS
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 30})
    await create_sync(world, d)
    async with _workers(world.settings):
        full = await world.run(d, SyncMode.FULL)
        assert full.counts.pushed == 30
        b, c = sorted(r["id"] for r in sf.live_records("Contact"))[:2]
        email_b, email_c = (sf.store.get("Contact", i).data["Email"] for i in (b, c))
        # the merge leaves the master with an address HubSpot refuses (INVALID_EMAIL)
        sf.merge_records("Contact", b, [c], {"Email": "not-an-email"})
        await _incremental(world, d)
        emails = {r["email"] for r in hs.live_records("contacts")}
        # deleting C's contact now would leave HubSpot with neither B's merged record nor C's
        assert {email_b, email_c} <= emails and len(emails) == 30
        with world.connected.engine.connect() as conn:
            letters = dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id)
        assert sorted(x.error_code for x in letters) == ["INVALID_EMAIL", HELD]
        (merge,) = _events(world, d, EventKind.MERGE)
        assert merge.counts == {"merged": 1, "deleted": 0, "kept": 0, "held": 1}
        before = _calls(hs, "hs.batch.archive")

        sf.update_record("Contact", b, {"Email": email_b})  # fixed at the source
        await _incremental(world, d)
    emails = {r["email"] for r in hs.live_records("contacts")}
    assert email_b in emails and email_c not in emails and len(emails) == 29
    assert _calls(hs, "hs.batch.archive") == before + 1  # the release: one batch call
    check_destination(world, d, source_records(world, d))
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, d.tenant, d.sync_id) == 0
        assert id_map_store.lookup_id_map(conn, d.tenant, d.sync_id, merge.record_id_hashes) == {}
    (delete,) = [e for e in _events(world, d, EventKind.DELETE) if e.counts.get("deleted")]
    assert delete.record_id_hashes == merge.record_id_hashes  # the held loser, deleted at last
    check_ledger(world, d)


async def test_an_emptied_recycle_bin_is_reconciled_exactly_after_a_failed_listing_deleted_nothing(
    world: World,
) -> None:
    d = SF_CONTACTS_TO_HS
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 300})
    await create_sync(world, d)
    async with _workers(world.settings):
        await world.run(d, SyncMode.FULL)
        ids = sorted(r["id"] for r in sf.live_records("Contact"))
        sf.update_record("Contact", ids[0], {"FirstName": "Changed"})
        await _incremental(world, d)
        assert await _last_run(world.connected.client, d) is None  # nothing purged: no reconciliation
        victims = ids[10:20]
        for rid in victims:
            sf.delete_record("Contact", rid)
        assert sf.empty_recycle_bin("Contact") == 10  # gone before the next run could read them
        # The listing fails (every SELECT Id answers 503): the reconciliation deletes nothing.
        sf.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="sf.query", server_error=1.0)]))
        await _incremental(world, d)
        _, failed = await _reconciled(world, d, before=None)
        assert failed.outcome is ReconcileOutcome.INCOMPLETE and failed.deleted == 0, failed
        assert len(hs.live_records("contacts")) == 300
        with world.connected.engine.connect() as conn:
            need = reconcile_store.reconcile_need(conn, d.tenant, d.sync_id)
        assert need is not None and need.reason == "DELETE_LOG_PURGED"  # still owed
        health = sync_health(world.connected.engine, d.tenant, d.sync_id)
        assert health.reconcile == "DELETE_LOG_PURGED" and health.last_run is not None
        assert health.last_run.mode != "reconcile"  # the sync's own runs, not the reconciliations
        sf.faults.clear()
        dry = await _reconcile(world, d, dry_run=True)
        assert (dry.outcome, dry.vanished, dry.deleted) == (ReconcileOutcome.DRY_RUN, 10, 0)
        sf.calls.clear()
        hs.calls.clear()
        done = await _reconcile(world, d)
    assert done.outcome is ReconcileOutcome.COMPLETED, done
    assert (done.listed, done.mapped, done.vanished, done.deleted, done.failed) == (290, 300, 10, 10, 0)
    # One SELECT Id page (≤ 2,000 ids) and one HubSpot batch archive (≤ 100): the minimum.
    assert (done.list_calls, done.delete_calls, done.delete_batches) == (1, 1, 1)
    assert _calls(sf, "sf.query") == 1 and _calls(hs, "hs.batch.archive") == 1
    check_destination(world, d, source_records(world, d))  # exactly the purged ones left HubSpot
    with world.connected.engine.connect() as conn:
        assert reconcile_store.reconcile_need(conn, d.tenant, d.sync_id) is None
    assert sync_health(world.connected.engine, d.tenant, d.sync_id).reconcile is None
    deletes = [e for e in _events(world, d, EventKind.DELETE) if e.details.get("reconcile")]
    # One reconciliation deleted: this one (the failed listing deleted nothing and recorded no delete).
    assert [e.counts["deleted"] for e in deletes] == [10]
    assert len(deletes[-1].record_id_hashes) == 10
    check_ledger(world, d)


async def test_a_mass_disappearance_is_refused_until_forced_with_the_cli(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in worker_env(world.settings).items():
        if key.startswith("CRMHUB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")
    d = SF_CONTACTS_TO_HS
    sf, hs = world.sf, world.hs
    sf.seed({"Contact": 40})
    await create_sync(world, d)
    sync = ["sync", "reconcile", "--tenant", d.tenant, "--sync", d.sync_id]
    async with _workers(world.settings):
        await world.run(d, SyncMode.FULL)
        for rid in sorted(r["id"] for r in sf.live_records("Contact"))[:25]:
            sf.delete_record("Contact", rid)
        sf.empty_recycle_bin("Contact")
        refused = await _crmhub(*sync)
        assert refused.exit_code == 1, refused.output
        assert "refused" in refused.output and "62.5%" in refused.output and "--force" in refused.output
        assert len(hs.live_records("contacts")) == 40
        dry = await _crmhub(*sync, "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        counted = ReconcileResult.model_validate_json(dry.output)
        assert (counted.outcome, counted.mapped, counted.vanished, counted.deleted) == (
            ReconcileOutcome.DRY_RUN, 40, 25, 0
        )  # fmt: skip
        forced = await _crmhub(*sync, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    done = ReconcileResult.model_validate_json(forced.output)
    assert (done.outcome, done.deleted, done.delete_calls) == (ReconcileOutcome.COMPLETED, 25, 1)
    check_destination(world, d, source_records(world, d))


async def test_a_hubspot_gdpr_delete_reaches_salesforce_through_a_reconciliation(world: World) -> None:
    d = HS_CONTACTS_TO_SF
    hs, sf = world.hs, world.sf
    hs.seed({"contacts": 250})
    await create_sync(world, d)
    async with _workers(world.settings):
        await world.run(d, SyncMode.FULL)
        erased = sorted((r["id"] for r in hs.live_records("contacts")), key=int)[5:8]
        for rid in erased:
            hs.gdpr_delete("contacts", rid)
        await _incremental(world, d)  # nothing reports a GDPR delete
        assert len(sf.live_records("Contact")) == 250
        hs.calls.clear()
        sf.calls.clear()
        # The reconciliation's Temporal Schedule (paused: it only runs when triggered here).
        sid, _ = await reconcileops.schedule(
            world.connected.client, d.tenant, d.sync_id, timedelta(days=1), paused=True,
            task_queue=world.settings.temporal.control_task_queue,
        )  # fmt: skip
        before = await _last_run(world.connected.client, d)
        await world.connected.client.get_schedule_handle(sid).trigger()
        await _wait_for_start(world, d, before)
        _, done = await _reconciled(world, d, before=before)
        await world.connected.client.get_schedule_handle(sid).delete()
    assert (done.outcome, done.listed, done.vanished, done.deleted) == (ReconcileOutcome.COMPLETED, 247, 3, 3)
    assert done.list_calls == 3 and _calls(hs, "hs.list.contacts") == 3  # ceil(247 / 100)
    assert done.delete_calls == 1 and _calls(sf, "sf.collections") == 1  # ≤ 200 ids a call
    at_sf = {r["External_Id__c"] for r in sf.live_records("Contact")}
    assert not set(erased) & at_sf and len(at_sf) == 247
    check_destination(world, d, source_records(world, d))
    (event,) = [e for e in _events(world, d, EventKind.DELETE) if e.details.get("reconcile")]
    assert event.counts["deleted"] == 3 and event.details["reason"] == "schedule"
    check_ledger(world, d)
