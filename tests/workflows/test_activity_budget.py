"""What one sync activity costs the database: transactions per pull and per push of one page, and
how often a run reads its context (sync, instruction, connection and tenant rows).

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
17 (the context loaded once, in the plan; later activities re-read only the tenant row, which holds
the authorisations a transfer is checked against). The bounds are those figures; raise one only
with a reason a reviewer accepts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from schemas.sync import FinishInput, PullInput, PushInput, RunCounts, SyncStatus
from tests.workflows import test_activities as base

pytestmark = base.pytestmark

world = base.world  # the fixture: sandbox CRMs, migrated database, SyncActivities(page_size=100)

PAGE = 100  # the world's page size and part size: one page is one staged part
PULL_TRANSACTIONS = 5
PUSH_TRANSACTIONS = 6
RUN_CONTEXT_READS = 17  # a run of two pages (plan, two pulls, one push, finish)
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
    assert run.reads["syncs"] + run.reads["instructions"] <= 3  # the context once, accepted types once
