"""What one sync activity costs the database: transactions per pull and per push of one page, and
how often a run reads its context (sync, instruction, connection and tenant rows) — and what the
worker's cache of a run's context must still see (a revoked authorisation, an edited mapping, a
retry).

Counted on the real engine with SQLAlchemy event listeners (``begin`` for every transaction, an
explicit ``engine.begin()`` and the autobegin of ``engine.connect()`` alike; ``before_cursor_execute``
for the statements), against the sandbox CRMs, like :mod:`tests.workflows.test_activities`.

Issue 15 measured before the change (one 100-record page, SQLite and PostgreSQL alike): a pull of it
8 transactions, its push 8, and a run of two pages 29 statements reading context rows (the whole
context — tenant, sync, instruction, both connections — loaded again in the plan and in every pull
and push, plus two connection reads per connector the services build). After it: the pull 5 (one
read of context, planned schema and kept parts; connector and token: 2; each part staged with its
quarantine in one; lineage 1), the push 6 (one read of context, parts and the first part; connector
and token: 2; id map and dead letters of a part in one; lineage 1; staging deleted 1) and the run
20 (instruction and connections loaded once, in the plan; later activities re-read the tenant row,
which holds the authorisations a transfer is checked against, and the sync row, whose edits they
must see, in the read they make anyway). The bounds are those figures; raise one only with a
reason a reviewer accepts.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError

from schemas.sync import FinishInput, PullInput, PushInput, RunCounts, SyncStatus
from store import syncs as sync_store
from store import tenants as tenant_store
from tests.workflows import test_activities as base

pytestmark = base.pytestmark

world = base.world  # the fixture: sandbox CRMs, migrated database, SyncActivities(page_size=100)

PAGE = 100  # the world's page size and part size: one page is one staged part
PULL_TRANSACTIONS = 5
PUSH_TRANSACTIONS = 6
RUN_CONTEXT_READS = 20
CONTEXT_TABLES = ("syncs", "instructions", "connections", "tenants")
_FROM = re.compile(r"\bFROM\s+\"?(\w+)", re.IGNORECASE)


@dataclass
class Tally:
    """Transactions begun and rows-of-context statements run on one engine."""

    transactions: int = 0
    reads: Counter[str] = field(default_factory=Counter)

    @property
    def context_reads(self) -> int:
        return sum(self.reads[t] for t in CONTEXT_TABLES)


@contextmanager
def tally(engine: Engine) -> Iterator[Tally]:
    t = Tally()

    def on_begin(_conn: Any) -> None:
        t.transactions += 1

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            found = _FROM.search(statement)
            if found:
                t.reads[found.group(1).lower()] += 1

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield t
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_execute)


def test_one_page_costs_few_transactions_and_the_context_is_read_once_per_activity(
    world: base.World,
) -> None:
    world.add_sync()
    acts = world.acts
    with tally(world.engine) as run:
        plan = world.plan()
        first = world.env().run(
            acts.pull_batch, PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=1)
        )
        assert first.records == PAGE and first.has_more
        with tally(world.engine) as pull:
            second = world.env().run(
                acts.pull_batch, PullInput(plan=plan, state=first.next_state, batch_seq=1, max_pages=1)
            )
        assert second.records == PAGE
        with tally(world.engine) as push:
            result = world.env().run(acts.push_batch, PushInput(plan=plan, batch=second))
        assert result.pushed == PAGE and result.failed == 0
        world.env().run(
            acts.finish_run,
            FinishInput(
                plan=plan, final_state=second.next_state, counts=RunCounts(pulled=2 * PAGE),
                status=SyncStatus.FAILED, message="stopped after two pages",
            ),
        )  # fmt: skip
    assert pull.transactions <= PULL_TRANSACTIONS, pull
    assert push.transactions <= PUSH_TRANSACTIONS, push
    assert run.context_reads <= RUN_CONTEXT_READS, run
    assert run.reads["instructions"] == 1  # the instruction (and the sync's connections) once a run


def _pulled(world: base.World) -> tuple[Any, Any]:
    world.add_sync()
    plan = world.plan()
    batch = world.env().run(
        world.acts.pull_batch, PullInput(plan=plan, state=plan.start_state, batch_seq=0, max_pages=1)
    )
    return plan, batch


def test_a_revoked_authorisation_stops_the_next_push(world: base.World) -> None:
    plan, batch = _pulled(world)
    with world.engine.begin() as conn:
        table = tenant_store.tenants
        conn.execute(
            table.update().where(table.c.id == base.TENANT).values(authorised_subprocessors=["salesforce"])
        )
    with pytest.raises(ApplicationError) as caught:
        world.env().run(world.acts.push_batch, PushInput(plan=plan, batch=batch))
    assert caught.value.non_retryable and "hubspot" in caught.value.message
    assert world.hubspot_contacts() == []  # nothing left crmhub


def test_a_mapping_edited_mid_run_reaches_the_next_push(world: base.World) -> None:
    plan, batch = _pulled(world)
    mapping = {k: v for k, v in base.MAPPING.items() if k != "LastName"}
    with world.engine.begin() as conn:
        sync_store.set_sync_mapping(conn, base.TENANT, "contacts", mapping, now=datetime.now(UTC))
    world.env().run(world.acts.push_batch, PushInput(plan=plan, batch=batch))
    contacts = world.hubspot_contacts()
    assert len(contacts) == PAGE and not any(c.get("lastname") for c in contacts)


def test_a_retry_reads_the_whole_context_again(world: base.World) -> None:
    plan, batch = _pulled(world)
    with tally(world.engine) as first:
        world.env().run(
            world.acts.pull_batch, PullInput(plan=plan, state=batch.next_state, batch_seq=1, max_pages=1)
        )
    retry = world.env()
    retry.info = dataclasses.replace(retry.info, attempt=2)
    with tally(world.engine) as again:
        retry.run(
            world.acts.pull_batch, PullInput(plan=plan, state=batch.next_state, batch_seq=1, max_pages=1)
        )
    assert first.reads["instructions"] == 0 and again.reads["instructions"] == 1
