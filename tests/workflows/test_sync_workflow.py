"""SyncWorkflow's own logic on the real dev server, with activities stubbed by name (STYLE habit 8):
paging to the end, push overlapping the next pull, continue-as-new, pause/resume, region pinning
(no worker of the tenant's region → waiting, with the reason), refusal, cancellation cleanup."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from schemas.connector import StreamState
from schemas.sync import (
    BatchRef,
    FinishInput,
    PlanInput,
    Progress,
    PullInput,
    PushInput,
    PushResult,
    RetryInput,
    RetryResult,
    RunCounts,
    SyncInput,
    SyncMode,
    SyncPhase,
    SyncPlanRef,
    SyncStatus,
    sync_workflow_id,
)
from workflows.sync import SyncWorkflow

pytestmark = pytest.mark.integration


@dataclass
class Fake:
    """Stub activities: a source of ``batches`` batches of 10 records each."""

    region_queue: str
    batches: int = 5
    per_batch: int = 10
    refuse: str | None = None
    pull_gate: asyncio.Event | None = None
    pulls: list[int] = field(default_factory=list)
    pushes: list[int] = field(default_factory=list)
    finished: list[FinishInput] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    pull_spans: list[tuple[float, float]] = field(default_factory=list)
    push_spans: list[tuple[float, float]] = field(default_factory=list)

    def overlapped(self) -> bool:
        """Some push ran while a pull was running (pipelining)."""
        return any(a < d and c < b for a, b in self.pull_spans for c, d in self.push_spans)

    continue_as_new_after: int = 200
    region_wait_s: float = 60.0
    retry_limit: int = 0
    retries: list[RetryInput] = field(default_factory=list)

    def plan(self) -> SyncPlanRef:
        return SyncPlanRef(
            tenant="acme", sync_id="s1", run_id="r", mode=SyncMode.FULL, region="eu",
            task_queue=self.region_queue, source="salesforce", source_stream="Contact",
            destination="hubspot", destination_stream="contacts", purpose="crm-sync",
            instruction_version=1, instruction_hash="h", start_state=StreamState(),
            continue_as_new_after_batches=self.continue_as_new_after, region_wait_s=self.region_wait_s,
            retry_rejected_per_run=self.retry_limit,
        )  # fmt: skip

    def activities(self) -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
        @activity.defn(name="plan_sync")
        async def plan_sync(inp: PlanInput) -> SyncPlanRef:
            if self.refuse:
                raise ApplicationError(self.refuse, type="PurposeViolation", non_retryable=True)
            return self.plan().model_copy(update={"run_id": inp.run_id})

        @activity.defn(name="pull_batch")
        async def pull_batch(inp: PullInput) -> BatchRef:
            if self.pull_gate is not None:
                await self.pull_gate.wait()
            self.pulls.append(inp.batch_seq)
            started = time.monotonic()
            await asyncio.sleep(0.05)
            self.pull_spans.append((started, time.monotonic()))
            seq = inp.batch_seq
            return BatchRef(
                batch_id=f"b{seq}", seq=seq, records=self.per_batch, pages=1, calls=1,
                next_state=StreamState(cursor=f"{seq + 1:04d}", tie_break="x"),
                has_more=seq + 1 < self.batches,
            )  # fmt: skip

        @activity.defn(name="push_batch")
        async def push_batch(inp: PushInput) -> PushResult:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            self.push_spans.append((started, time.monotonic()))
            self.pushes.append(inp.batch.seq)
            n = inp.batch.records
            return PushResult(batch_id=inp.batch.batch_id, pushed=n - 1, created=n - 1, failed=1, calls=1)

        @activity.defn(name="finish_run")
        async def finish_run(inp: FinishInput) -> None:
            self.finished.append(inp)

        @activity.defn(name="retry_rejected")
        async def retry_rejected(inp: RetryInput) -> RetryResult:
            self.retries.append(inp)
            return RetryResult(retried=3, pushed=2, updated=2, failed=1, resolved=2, gone=0, source_calls=1,
                               destination_calls=1)  # fmt: skip

        @activity.defn(name="discard_run_staging")
        async def discard_run_staging(plan: SyncPlanRef) -> None:
            self.discarded.append(plan.run_id)

        return [plan_sync, finish_run], [pull_batch, push_batch, discard_run_staging, retry_rejected]


@pytest.fixture
async def client(temporal_env) -> Client:
    return Client(temporal_env.client.service_client, namespace=temporal_env.client.namespace,
                  data_converter=pydantic_data_converter)  # fmt: skip


@pytest.fixture
def queues() -> tuple[str, str]:
    return f"control-{uuid.uuid4().hex[:8]}", f"eu-{uuid.uuid4().hex[:8]}"


async def _start(client: Client, control: str) -> WorkflowHandle[SyncWorkflow, RunCounts]:
    sync_id = f"s-{uuid.uuid4().hex[:8]}"
    return await client.start_workflow(
        SyncWorkflow.run, SyncInput(tenant="acme", sync_id=sync_id), id=sync_workflow_id("acme", sync_id),
        task_queue=control, execution_timeout=timedelta(minutes=2),
    )  # fmt: skip


@pytest.fixture
async def running(client: Client, queues: tuple[str, str]) -> AsyncIterator[tuple[Client, Fake, str]]:
    control, region = queues
    fake = Fake(region_queue=region)
    ctl_acts, region_acts = fake.activities()
    async with (
        Worker(client, task_queue=control, workflows=[SyncWorkflow], activities=ctl_acts),
        Worker(client, task_queue=region, activities=region_acts),
    ):
        yield client, fake, control


async def test_runs_every_batch_and_overlaps_push_with_pull(running) -> None:
    client, fake, control = running
    handle = await _start(client, control)
    counts = await handle.result()
    assert fake.pulls == [0, 1, 2, 3, 4]
    assert sorted(fake.pushes) == [0, 1, 2, 3, 4]
    assert counts.pulled == 50 and counts.pushed == 45 and counts.failed == 5 and counts.batches == 5
    assert fake.finished[-1].status is SyncStatus.COMPLETED
    assert fake.finished[-1].final_state.cursor == "0005"
    assert fake.overlapped(), "push of batch n should overlap pull of batch n+1"
    progress = await handle.query(SyncWorkflow.progress)
    assert progress.status is SyncStatus.COMPLETED and progress.counts.pulled == 50
    await keep_history(handle, "sync_completed")


async def test_after_the_last_push_a_run_retries_rejected_records_and_counts_them(running) -> None:
    """Issue 14 item 4: the retry step runs once, after every push, bounded by the plan's setting,
    on the region queue; on demand (``retry_rejected``) it asks for every letter."""
    client, fake, control = running
    fake.retry_limit = 7
    counts = await (await _start(client, control)).result()
    (auto,) = fake.retries
    assert (auto.limit, auto.everything) == (7, False) and len(fake.pushes) == 5
    assert (counts.retried, counts.retry_resolved, counts.pushed, counts.failed) == (3, 2, 45 + 2, 5 + 1)
    sync_id = f"s-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        SyncWorkflow.run, SyncInput(tenant="acme", sync_id=sync_id, retry_rejected=True),
        id=sync_workflow_id("acme", sync_id), task_queue=control, execution_timeout=timedelta(minutes=2),
    )  # fmt: skip
    await handle.result()
    assert fake.retries[-1].everything is True
    await keep_history(handle, "sync_retried_rejected")


async def test_a_plan_without_a_retry_budget_skips_the_step(running) -> None:
    client, fake, control = running
    counts = await (await _start(client, control)).result()
    assert fake.retries == [] and counts.retried == 0


async def test_continue_as_new_keeps_counts_and_cursor(running) -> None:
    client, fake, control = running
    fake.continue_as_new_after, fake.batches = 2, 7
    handle = await _start(client, control)
    counts = await handle.result()
    assert counts.pulled == 70 and counts.batches == 7
    assert fake.pulls == list(range(7))  # resumed at the right batch each time, none repeated
    runs = [e async for e in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) == 4  # 2 + 2 + 2 + 1 batches
    assert len({f.plan.run_id for f in fake.finished}) == 1  # one logical run
    await keep_history(handle, "sync_last_run_after_continue_as_new")


async def test_pause_and_resume(running) -> None:
    client, fake, control = running
    fake.pull_gate = asyncio.Event()
    handle = await _start(client, control)
    await _until(handle, lambda p: p.phase is SyncPhase.PULLING)  # first pull in flight (gated)
    await handle.signal(SyncWorkflow.pause)
    fake.pull_gate.set()
    await _until(handle, lambda p: p.status is SyncStatus.PAUSED and p.counts.batches >= 1)
    paused_at = len(fake.pulls)
    await asyncio.sleep(0.5)
    assert len(fake.pulls) == paused_at  # nothing pulled while paused
    await handle.signal(SyncWorkflow.resume)
    counts = await handle.result()
    assert counts.pulled == 50
    await keep_history(handle, "sync_paused_resumed")


async def test_refused_plan_fails_closed_with_the_reason(running) -> None:
    client, fake, control = running
    fake.refuse = "mapping reads field 'Phone' outside the instruction's allowlist for Contact"
    handle = await _start(client, control)
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert "sync refused" in str(info.value.cause)
    assert "Phone" in str(info.value.cause)
    progress = await handle.query(SyncWorkflow.progress)
    assert progress.status is SyncStatus.REFUSED
    assert not fake.pulls
    await keep_history(handle, "sync_refused")


async def test_cancel_discards_staging_and_records_the_run(running) -> None:
    client, fake, control = running
    fake.pull_gate = asyncio.Event()
    handle = await _start(client, control)
    await _until(handle, lambda p: p.run_id is not None and p.region == "eu")
    await handle.cancel()
    fake.pull_gate.set()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert fake.discarded
    assert fake.finished[-1].status is SyncStatus.CANCELLED
    await keep_history(handle, "sync_cancelled")


async def test_without_a_worker_of_the_region_it_waits_and_says_why(client, queues) -> None:
    control, region = queues
    fake = Fake(region_queue=region, region_wait_s=1.0)
    ctl_acts, region_acts = fake.activities()
    # Only the control queue (e.g. a US worker) is served: nobody polls the EEA queue.
    async with Worker(client, task_queue=control, workflows=[SyncWorkflow], activities=ctl_acts):
        handle = await _start(client, control)
        progress = await _until(handle, lambda p: p.status is SyncStatus.WAITING)
        assert progress.waiting_reason is not None
        assert region in progress.waiting_reason
        assert "crmhub worker --region eu" in progress.waiting_reason
        assert not fake.pulls
        # An EEA worker appears: the same run proceeds, on the EEA queue only.
        async with Worker(client, task_queue=region, activities=region_acts):
            counts = await handle.result()
    assert counts.pulled == 50
    await keep_history(handle, "sync_waited_for_region")


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With CRMHUB_RECORD_HISTORIES=1, save the run's history for the replay test (test_replay.py)."""
    if os.environ.get("CRMHUB_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        history = await handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def _until(handle, predicate) -> Progress:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        progress: Progress = await handle.query(SyncWorkflow.progress)
        if predicate(progress):
            return progress
        assert asyncio.get_running_loop().time() < deadline, f"condition not reached: {progress}"
        await asyncio.sleep(0.1)
