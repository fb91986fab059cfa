"""NoticeDispatchWorkflow on the session dev server and its activity against ``db_url``.

The workflow tests stub, by name, the ``list_pending_notices`` activity (a list the test controls) and
the ``NoticeDeliveryWorkflow`` child (held open, completed or failed by its notice id), to measure
what one pass starts: at most ``limit``, at most ``max_scan`` looked at, a running or delivered notice
never started again, a failed delivery started anew; each pass's history replays. The activity test
uses the real database: which notices are pending, oldest first, paged by a cursor.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from governance.keys import LocalKeyringProvider
from governance.vault import Vault
from schemas.notices import (
    NoticeDeliveryInput,
    NoticeDeliveryResult,
    NoticeDispatchInput,
    NoticeDispatchResult,
    PendingNoticesInput,
    notice_workflow_id,
)
from schemas.settings import load_settings
from services import notices
from store import notices as notice_store
from store import tenants as tenant_store
from tests.workflows.test_sync_workflow import keep_history
from workflows.notice_activities import NoticeActivities
from workflows.notices import NoticeDispatchWorkflow

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@workflow.defn(name="NoticeDeliveryWorkflow", sandboxed=False)  # a test module (pytest imports)
class FakeDelivery:
    """``hold-*`` stays running until signalled, ``fail-*`` fails, any other id completes."""

    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, inp: NoticeDeliveryInput) -> NoticeDeliveryResult:
        if inp.notice_id.startswith("fail-"):
            raise ApplicationError("relay gone for good", non_retryable=True)
        if inp.notice_id.startswith("hold-"):
            await workflow.wait_condition(lambda: self.released)
        return NoticeDeliveryResult(notice_id=inp.notice_id, delivered=("ct_1",))

    @workflow.signal
    def release(self) -> None:
        self.released = True


class FakeListing:
    """``list_pending_notices`` over ``pending`` (in that order), paged like the real one."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.calls: list[PendingNoticesInput] = []

    @activity.defn(name="list_pending_notices")
    def list_pending_notices(self, inp: PendingNoticesInput) -> list[str]:
        self.calls.append(inp)
        start = self.pending.index(inp.after) + 1 if inp.after else 0
        return self.pending[start : start + inp.limit]


@pytest.fixture
async def running(client: Client) -> AsyncIterator[tuple[str, FakeListing, str]]:
    """A worker on a fresh queue; notice ids get a per-test prefix (child ids are namespace-wide)."""
    queue = f"dispatch-{uuid.uuid4().hex[:8]}"
    listing = FakeListing()
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[NoticeDispatchWorkflow, FakeDelivery],
            activities=[listing.list_pending_notices],
            activity_executor=pool,
        ):
            yield queue, listing, uuid.uuid4().hex[:6]


async def _pass(client: Client, queue: str, name: str = "", **limits: int) -> NoticeDispatchResult:
    handle = await client.start_workflow(
        NoticeDispatchWorkflow.run,
        NoticeDispatchInput(**limits),
        id=f"maintenance:notice-dispatch-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        execution_timeout=timedelta(minutes=1),
    )
    result = await handle.result()
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[NoticeDispatchWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)  # replay-safe: the pass's own history replays
    if name:
        await keep_history(handle, name)
    return result


async def _status(client: Client, notice_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(notice_workflow_id(notice_id)).describe()).status


async def test_a_pass_starts_at_most_limit_and_looks_at_most_max_scan(
    client: Client, running: tuple[str, FakeListing, str]
) -> None:
    queue, listing, tag = running
    listing.pending = [f"hold-{tag}-{i}" for i in range(7)]
    ids = listing.pending

    first = await _pass(client, queue, "notice_dispatch", limit=3)
    assert (first.started, first.skipped, first.scanned) == (tuple(ids[:3]), 0, 3)
    assert [await _status(client, n) for n in ids[:3]] == [WorkflowExecutionStatus.RUNNING] * 3
    assert len(listing.calls) == 1

    listing.calls.clear()  # the first three still run: skipped, the next three started
    second = await _pass(client, queue, limit=3)
    assert (second.started, second.skipped, second.scanned) == (tuple(ids[3:6]), 3, 6)
    assert [(c.after, c.limit) for c in listing.calls] == [("", 3), (ids[2], 3)]

    bounded = await _pass(client, queue, limit=3, max_scan=5)  # five running ones fill the scan budget
    assert (bounded.started, bounded.skipped, bounded.scanned) == ((), 5, 5)

    rest = await _pass(client, queue)  # defaults: the last one, the end of the list
    assert (rest.started, rest.skipped, rest.scanned) == ((ids[6],), 6, 7)
    for n in ids:
        await client.get_workflow_handle(notice_workflow_id(n)).signal(FakeDelivery.release)
        assert (await client.get_workflow_handle(notice_workflow_id(n)).result())["notice_id"] == n


async def test_a_delivered_notice_is_never_started_again_and_a_failed_one_is(
    client: Client, running: tuple[str, FakeListing, str]
) -> None:
    queue, listing, tag = running
    done, failed = f"done-{tag}", f"fail-{tag}"
    listing.pending = [done, failed]
    first = await _pass(client, queue)
    assert set(first.started) == {done, failed}
    await client.get_workflow_handle(notice_workflow_id(done)).result()
    with pytest.raises(WorkflowFailureError):
        await client.get_workflow_handle(notice_workflow_id(failed)).result()
    assert await _status(client, done) == WorkflowExecutionStatus.COMPLETED
    assert await _status(client, failed) == WorkflowExecutionStatus.FAILED

    # A stale listing still names both: the delivered one is refused by the id reuse policy.
    again = await _pass(client, queue)
    assert (again.started, again.skipped, again.scanned) == ((failed,), 1, 2)
    assert await _status(client, done) == WorkflowExecutionStatus.COMPLETED


async def test_an_empty_list_is_one_activity_call_and_nothing_started(
    client: Client, running: tuple[str, FakeListing, str]
) -> None:
    queue, listing, _ = running
    result = await _pass(client, queue)
    assert result == NoticeDispatchResult()
    assert [(c.after, c.limit) for c in listing.calls] == [("", 50)]


# ---- the activity, on the real database ------------------------------------------------------------


@pytest.fixture
def acts(db_engine: Engine, db_url: str, tmp_path: Path) -> NoticeActivities:
    from services.wiring import deps_from_settings

    with db_engine.begin() as conn:
        for tenant in ("acme", "quiet"):
            tenant_store.create_tenant(
                conn, id=tenant, name=tenant, home_region="eea", authorised_subprocessors=[], now=T0
            )
    settings = load_settings(data_dir=tmp_path / "data", database_url=db_url)
    vault = Vault(db_engine, LocalKeyringProvider(tmp_path / "keyring.json"))
    return NoticeActivities(deps_from_settings(settings, engine=db_engine, vault=vault, oauth_configs=[]))


def test_the_activity_lists_undelivered_notices_oldest_first_in_pages(
    acts: NoticeActivities, db_engine: Engine
) -> None:
    vault = acts.deps.vault
    kept, _ = notices.add_contact(db_engine, vault, "acme", label="dpo", email="dpo@acme.example", now=T0)
    gone, _ = notices.add_contact(db_engine, vault, "acme", label="old", email="old@acme.example", now=T0)
    sent = [
        notices.enqueue_notice(
            db_engine, tenant="acme", kind="run_failed", facts={"sync_id": f"s{i}"}, subject=f"s{i}",
            now=T0 + timedelta(minutes=10 - i),
        ).notice_id
        for i in range(4)
    ]  # fmt: skip
    oldest_first = sent[::-1]
    notices.enqueue_notice(db_engine, tenant="quiet", kind="run_failed", facts={}, subject="q")  # no contacts
    with db_engine.begin() as conn:  # one notice reached both contacts; another reached the kept one
        for contact in (kept.id, gone.id):
            notice_store.record_attempt(conn, oldest_first[1], contact, ok=True, error="", now=T0)
        notice_store.record_attempt(conn, oldest_first[2], kept.id, ok=True, error="", now=T0)
    env = ActivityEnvironment()

    def listed(after: str = "", limit: int = 50) -> list[str]:
        page: list[str] = env.run(acts.list_pending_notices, PendingNoticesInput(after=after, limit=limit))
        return page

    assert listed() == [oldest_first[0], oldest_first[2], oldest_first[3]]
    assert listed(limit=2) == [oldest_first[0], oldest_first[2]]
    assert listed(after=oldest_first[2], limit=2) == [oldest_first[3]]
    assert listed(after=oldest_first[3]) == []

    # The contact still owed a notice is removed: that notice is no longer pending; the others
    # skip it too (a removed contact cannot be reached, the tenant's other contacts still are).
    notices.remove_contact(db_engine, "acme", gone.id)
    assert listed() == [oldest_first[0], oldest_first[3]]
    assert notices.pending_deliveries(db_engine, oldest_first[0]) == [kept.id]
