"""End to end (issue 14 item 4, second half): rejected records are retried when the sync's mapping
changes, and on demand with ``crmhub sync retry-rejected`` — through the real stack (dev server,
sandbox CRMs over HTTPS, in-process region workers, ``db_url``).

Mapping: HubSpot contacts → Salesforce with ``jobtitle → Department``: a job title longer than Department's
80 characters is refused (``STRING_TOO_LONG``). Mapped to ``Title`` (128) instead, the next run —
with nothing changed at the source — reads exactly the refused records again (one ``batch/read``),
writes them, resolves their letters and links its lineage to the refusing run; the run after it
retries nothing. On demand: Department widened at Salesforce (no change at the source, none to the
sync), ``crmhub sync retry-rejected`` writes them too, and a refused record deleted at the source
meanwhile resolves its letter as gone. Instruction: v1 pseudonymizes e-mail addresses, which
Salesforce refuses in Email; under v2 (no pseudonym) the next run writes exactly the refused ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from api.cli import app as cli
from api.demo import _workers
from governance.lineage import Ledger
from schemas.lineage import EventKind, LineageEvent
from schemas.sync import SyncMode, SyncStatus
from store import dead_letters as dead_letter_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store.syncs import mapping_hash
from tests.sync_support import HS_CONTACTS_TO_SF, World, check_ledger, create_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

d = dataclasses.replace(
    HS_CONTACTS_TO_SF, tenant="hs-retry", mapping={**HS_CONTACTS_TO_SF.mapping, "jobtitle": "Department"}
)
LONG = "Head of " + "Customer Relations " * 5  # 103 characters: over Department's 80, within Title's 128
BAD = 3


def _seed(world: World) -> list[str]:
    hs = world.hs
    hs.seed({"contacts": 20})
    for c in hs.live_records("contacts"):  # seeded titles all fit Department
        hs.update_record("contacts", c["id"], {"jobtitle": "Engineer"})
    return [
        hs.create_record(
            "contacts", {"email": f"long{i}@retry.test", "lastname": f"Long{i}", "jobtitle": LONG}
        )
        for i in range(BAD)
    ]


def _letters(world: World) -> list[dead_letter_store.DeadLetter]:
    with world.connected.engine.connect() as conn:
        return dead_letter_store.list_dead_letters(conn, d.tenant, d.sync_id)


def _retry_events(world: World, run_id: str) -> tuple[LineageEvent, LineageEvent]:
    events = Ledger(world.connected.engine, d.tenant).read_events(run_id=run_id)
    (pull,) = [e for e in events if e.kind is EventKind.PULL and e.details.get("step") == "retry"]
    (push,) = [e for e in events if e.kind is EventKind.PUSH and e.details.get("step") == "retry"]
    return pull, push


def _at_salesforce(world: World, bad: list[str]) -> dict[str, dict[str, Any]]:
    return {r["External_Id__c"]: r for r in world.sf.live_records("Contact") if r["External_Id__c"] in bad}


async def _refused_full_run(world: World, bad: list[str]) -> list[dead_letter_store.DeadLetter]:
    full = await world.run(d, SyncMode.FULL)
    assert full.status is SyncStatus.COMPLETED
    assert (full.counts.pushed, full.counts.failed) == (20, BAD)
    letters = _letters(world)
    assert len(letters) == BAD and {x.error_code for x in letters} == {"STRING_TOO_LONG"}
    with world.connected.engine.connect() as conn:
        row = sync_store.get_sync(conn, d.tenant, d.sync_id)
    assert row is not None
    assert {(x.instruction_version, x.mapping_hash) for x in letters} == {(1, mapping_hash(row.spec))}
    assert _at_salesforce(world, bad) == {}
    return letters


async def test_a_mapping_change_retries_exactly_the_refused_records_on_the_next_run(world: World) -> None:
    bad = _seed(world)
    await create_sync(world, d)
    async with _workers(world.settings):
        letters = await _refused_full_run(world, bad)
        with world.connected.engine.begin() as conn:  # the fix: map the job title to Title (128)
            mapping = {**d.mapping, "jobtitle": "Title"}
            sync_store.set_sync_mapping(conn, d.tenant, d.sync_id, mapping, now=datetime.now(UTC))
        world.hs.calls.clear()
        retried = await world.run(d, SyncMode.INCREMENTAL)
        assert retried.status is SyncStatus.COMPLETED
        c = retried.counts
        assert (c.retried, c.retry_resolved, c.retry_gone, c.failed) == (BAD, BAD, 0, 0)
        assert c.pushed == BAD + c.pulled  # the retried three, and whatever the settle window re-read
        # One batch/read for the three; nothing else read them.
        assert world.hs.calls.counts().get("hs.batch.read.contacts") == 1
        again = await world.run(d, SyncMode.INCREMENTAL)
        assert again.counts.retried == 0  # retried once per change: the next run leaves them be
    at_sf = _at_salesforce(world, bad)
    assert set(at_sf) == set(bad)
    assert {r["Title"] for r in at_sf.values()} == {LONG}
    assert {r.get("Department") for r in at_sf.values()} == {None}
    assert _letters(world) == []
    pull, push = _retry_events(world, retried.run_id or "")
    refusing = {x.run_id for x in letters}
    assert push.details["retry_of_runs"] == ",".join(sorted(refusing))  # the link to the refusal
    assert push.details["resolved_refusals_of_runs"] == ",".join(sorted(refusing))
    assert set(str(push.details["retried_letters"]).split(",")) == {x.id for x in letters}
    assert (push.counts["resolved"], push.counts["pushed"], push.counts["retried"]) == (BAD, BAD, BAD)
    assert set(push.record_id_hashes) == set(pull.record_id_hashes) == {x.record_key_hash for x in letters}
    assert (pull.counts["records"], pull.counts["letters"], pull.counts["calls"]) == (BAD, BAD, 1)
    check_ledger(world, d)


def _crmhub(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def test_retry_rejected_on_demand_after_a_fix_at_the_destination(world: World, cli_env: None) -> None:
    bad = _seed(world)
    await create_sync(world, d)
    async with _workers(world.settings):
        letters = await _refused_full_run(world, bad)
        # An admin widens Department at Salesforce; nothing changes at the source or in the sync.
        world.sf.retype_field("Contact", "Department", "string", length=255)
        quiet = await world.run(d, SyncMode.INCREMENTAL)
        assert quiet.counts.retried == 0 and len(_letters(world)) == BAD  # no change: no automatic retry
        assert world.hs.delete_record("contacts", bad[0])  # one of them is deleted at the source meanwhile
        world.hs.calls.clear()
        result = await asyncio.to_thread(
            _crmhub, "sync", "retry-rejected", "--tenant", d.tenant, "--sync", d.sync_id
        )
        assert result.exit_code == 0, result.output
        assert "retried 3 · resolved 3 (gone at the source 1) · refused again 0" in result.output
        assert world.hs.calls.counts().get("hs.batch.read.contacts") == 1
    at_sf = _at_salesforce(world, bad)
    assert set(at_sf) == set(bad[1:]) and {r.get("Department") for r in at_sf.values()} == {LONG}
    assert _letters(world) == []
    runs = {
        e.run_id
        for e in Ledger(world.connected.engine, d.tenant).read_events()
        if e.details.get("step") == "retry"
    }
    (run_id,) = runs
    pull, push = _retry_events(world, run_id)
    assert (pull.counts["records"], pull.counts["gone_at_source"]) == (BAD - 1, 1)
    assert (push.counts["resolved"], push.counts["gone_at_source"], push.counts["pushed"]) == (
        BAD,
        1,
        BAD - 1,
    )
    assert push.details["retry_of_runs"] == ",".join(sorted({x.run_id for x in letters}))
    check_ledger(world, d)


PSEUDONYMIZED = dataclasses.replace(HS_CONTACTS_TO_SF, tenant="hs-retry-ins", pseudonymize=("email",))


async def test_an_instruction_change_retries_exactly_the_refused_records_on_the_next_run(
    world: World,
) -> None:
    """Instruction v1 pseudonymizes e-mail addresses: Salesforce refuses a pseudonym in Email
    (``INVALID_EMAIL_ADDRESS``) for the three contacts that have one. The controller's v2 no longer
    pseudonymizes them; the sync cites v2 and the next run writes exactly those three."""
    p = PSEUDONYMIZED
    hs = world.hs
    hs.seed({"contacts": 20})
    for c in hs.live_records("contacts"):
        hs.update_record("contacts", c["id"], {"email": ""})  # no address: nothing to refuse
    bad = [
        hs.create_record("contacts", {"email": f"p{i}@retry.test", "lastname": f"P{i}"}) for i in range(BAD)
    ]
    await create_sync(world, p)
    async with _workers(world.settings):
        full = await world.run(p, SyncMode.FULL)
        assert (full.counts.pushed, full.counts.failed) == (20, BAD)
        with world.connected.engine.connect() as conn:
            letters = dead_letter_store.list_dead_letters(conn, p.tenant, p.sync_id)
        assert {x.error_code for x in letters} == {"INVALID_EMAIL_ADDRESS"} and len(letters) == BAD
        assert {x.instruction_version for x in letters} == {1}
        v2 = dataclasses.replace(p, pseudonymize=()).instruction(2)
        now = datetime.now(UTC)
        with world.connected.engine.begin() as conn:
            instruction_store.add_instruction(
                conn, tenant=p.tenant, version=2, content=v2.model_dump(mode="json"),
                content_hash=v2.content_hash, now=now,
            )  # fmt: skip
            sync_store.set_sync_instruction(conn, p.tenant, p.sync_id, 2, now=now)
        world.hs.calls.clear()
        retried = await world.run(p, SyncMode.INCREMENTAL)
        c = retried.counts
        assert (c.retried, c.retry_resolved, c.failed) == (BAD, BAD, 0)
        assert world.hs.calls.counts().get("hs.batch.read.contacts") == 1
    emails = {r["External_Id__c"]: r.get("Email") for r in world.sf.live_records("Contact")}
    assert {emails[b] for b in bad} == {f"p{i}@retry.test" for i in range(BAD)}
    with world.connected.engine.connect() as conn:
        assert dead_letter_store.count_dead_letters(conn, p.tenant, p.sync_id) == 0
    push = [
        e
        for e in Ledger(world.connected.engine, p.tenant).read_events(run_id=retried.run_id)
        if e.kind is EventKind.PUSH and e.details.get("step") == "retry"
    ]
    assert [(e.instruction_version, e.details["retry_of_runs"]) for e in push] == [(2, full.run_id)]
    check_ledger(world, p)
