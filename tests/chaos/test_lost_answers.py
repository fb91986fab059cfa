"""Lost answers (issue 17, "a first sync into an empty HubSpot reports created 0"): HubSpot carries
out a batch upsert but its answer never arrives (the sandbox's ``lost`` fault: a gateway timeout
after the commit), the connector resends the batch, and the resend answers ``new: false`` for every
contact the lost send created — so a first sync counted them *updated*. Through the real stack (dev
server, sandbox CRMs over HTTPS, in-process workers, OAuth connections, ``db_url``) at a realistic
size: 5,000 Salesforce contacts into an empty HubSpot with 30 % of the upserts' answers lost.

Checked: the first run counts 5,000 created and 0 updated (progress, run record and the ledger's
``push`` events), HubSpot holds 5,000 contacts (the resends duplicated nothing), and the lost
answers did happen (more upsert calls than batches). A second full run under the same faults counts
5,000 updated and 0 created: a resent batch of records an *earlier* run created stays "updated".
"""

from __future__ import annotations

import dataclasses

import pytest

from api.demo import _workers
from sandbox.faults import FaultPlan, FaultRule
from schemas.sync import SyncMode, SyncStatus
from tests.sync_support import SF_CONTACTS_TO_HS, World, check_ledger, create_sync

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

CONTACTS = 5_000
BATCH = 100  # HubSpot's batch upsert size
LOST = 0.3
D = dataclasses.replace(SF_CONTACTS_TO_HS, tenant="lost-answers")


async def test_a_resent_upsert_counts_what_its_lost_send_created(world: World) -> None:
    world.sf.seed({"Contact": CONTACTS})
    await create_sync(world, D)
    upsert = "hs.batch.upsert.contacts"
    world.hs.faults.set_plan(FaultPlan(seed=17, rules=[FaultRule(endpoint=upsert, lost=LOST)]))
    async with _workers(world.settings):
        world.hs.calls.clear()
        first = await world.run(D, SyncMode.FULL)
        sent = sum(1 for c in world.hs.calls.all() if c.endpoint == upsert)
        world.hs.calls.clear()
        second = await world.run(D, SyncMode.FULL)
        resent = sum(1 for c in world.hs.calls.all() if c.endpoint == upsert)
    world.hs.faults.clear()
    assert first.status is SyncStatus.COMPLETED and second.status is SyncStatus.COMPLETED
    batches = CONTACTS // BATCH
    assert sent > batches and resent > batches, (sent, resent)  # answers were lost, batches resent
    assert len(world.hs.live_records("contacts")) == CONTACTS  # ... and nothing was duplicated
    c1, c2 = first.counts, second.counts
    assert (c1.pulled, c1.pushed, c1.created, c1.updated, c1.failed) == (CONTACTS, CONTACTS, CONTACTS, 0, 0)
    assert (c2.pulled, c2.pushed, c2.created, c2.updated, c2.failed) == (CONTACTS, CONTACTS, 0, CONTACTS, 0)
    lineage = check_ledger(world, D)  # the ledger verifies and says the same
    assert (lineage["push.created"], lineage["push.updated"]) == (CONTACTS, CONTACTS)
