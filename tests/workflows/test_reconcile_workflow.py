"""``ReconcileWorkflow`` on the session dev server with its activities stubbed by name (a fresh task
queue per test): the listing resumes from each activity's state until its end, a listing that keeps
failing ends *incomplete* after ``list_attempts`` tries (the apply step is told, and deletes nothing),
a source that cannot list ids is reported as such.

The real activities and guards are driven end to end in ``tests/e2e/test_vanishing_deletes.py``."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from schemas import reconcile as rc
from schemas.connector import StreamState
from tests.workflows.test_sync_workflow import keep_history
from workflows.reconcile import ReconcileWorkflow

pytestmark = pytest.mark.integration


class Stubs:
    """Stand-ins for ReconcileActivities: a listing of ``pages`` activities (or failures), and an
    apply that records what it was told."""

    def __init__(self, queue: str, pages: int, *, fail: bool = False, supported: bool = True) -> None:
        self.queue, self.pages, self.fail, self.supported = queue, pages, fail, supported
        self.listed: list[tuple[int, str | None]] = []
        self.list_attempts = 0
        self.applied: list[rc.ApplyInput] = []

    @activity.defn(name="begin_reconcile")
    def begin(self, inp: rc.ReconcileInput) -> rc.ReconcilePlan:
        return rc.ReconcilePlan(
            tenant=inp.tenant, sync_id=inp.sync_id, run_id="r1", task_queue=self.queue,
            started_at=datetime(2026, 1, 1, tzinfo=UTC), source="salesforce", source_stream="Contact",
            destination="hubspot", destination_stream="contacts", list_attempts=3,
        )  # fmt: skip

    @activity.defn(name="list_source_ids")
    def list_ids(self, inp: rc.ListInput) -> rc.ListResult:
        self.list_attempts += 1
        if self.fail:
            raise ApplicationError("503 SERVER_UNAVAILABLE", type="TransientError")
        self.listed.append((inp.seq, inp.state.page_token))
        more = inp.seq + 1 < self.pages
        return rc.ListResult(
            next_state=StreamState(page_token=f"after-{inp.seq}"), has_more=more, listed=10, pages=2,
            calls=2, supported=self.supported,
        )  # fmt: skip

    @activity.defn(name="apply_reconcile")
    def apply(self, inp: rc.ApplyInput) -> rc.ReconcileResult:
        self.applied.append(inp)
        outcome = rc.ReconcileOutcome.COMPLETED if inp.complete else rc.ReconcileOutcome.INCOMPLETE
        return rc.ReconcileResult(outcome=outcome, list_pages=inp.list_pages, list_calls=inp.list_calls)


async def _run(client: Client, stubs: Stubs, record: str | None = None) -> rc.ReconcileResult:
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client,
            task_queue=stubs.queue,
            workflows=[ReconcileWorkflow],
            activities=[stubs.begin, stubs.list_ids, stubs.apply],
            activity_executor=pool,
        ):
            handle = await client.start_workflow(
                ReconcileWorkflow.run,
                rc.ReconcileInput(tenant="acme", sync_id="contacts"),
                id=f"reconcile-test-{uuid.uuid4().hex}",
                task_queue=stubs.queue,
            )
            result = await handle.result()
            if record:
                await keep_history(handle, record)
            return result


async def test_the_listing_resumes_from_each_activitys_state_until_its_end(client: Client) -> None:
    stubs = Stubs(f"rq-{uuid.uuid4().hex}", pages=3)
    result = await _run(client, stubs, record="reconcile_completed")
    assert stubs.listed == [(0, None), (1, "after-0"), (2, "after-1")]
    (applied,) = stubs.applied
    assert applied.complete and (applied.list_pages, applied.list_calls) == (6, 6)
    assert result.outcome is rc.ReconcileOutcome.COMPLETED


async def test_a_listing_that_keeps_failing_ends_incomplete_after_its_attempts(client: Client) -> None:
    stubs = Stubs(f"rq-{uuid.uuid4().hex}", pages=3, fail=True)
    result = await _run(client, stubs, record="reconcile_listing_truncated")
    assert stubs.list_attempts == 3  # the plan's list_attempts, then the listing counts as truncated
    (applied,) = stubs.applied
    assert not applied.complete and "503 SERVER_UNAVAILABLE" in applied.why_incomplete
    assert result.outcome is rc.ReconcileOutcome.INCOMPLETE


async def test_a_source_that_cannot_list_ids_is_reported_not_judged(client: Client) -> None:
    stubs = Stubs(f"rq-{uuid.uuid4().hex}", pages=3, supported=False)
    await _run(client, stubs)
    (applied,) = stubs.applied
    assert applied.unsupported and not applied.complete
    assert len(stubs.listed) == 1
