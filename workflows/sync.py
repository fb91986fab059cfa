"""``SyncWorkflow``: one run of one sync, deterministic, holding only references.

plan (control queue: metadata only) → loop { pull a run of pages → stage sealed batch } overlapped
with { push the previous batch } on the tenant's **region** task queue → checkpoint the cursor in
workflow state → continue-as-new every K batches → finish (store cursor, sign ledger checkpoint).

Ops steer it with signals ``pause``/``resume``, cancel it with Temporal cancellation (staged
batches are discarded), and read it with the ``progress`` query; the same state is mirrored in
the UI through current details, activity summaries and the ``CrmhubStatus`` search attribute.

Workflows and the metadata-only activities (plan, finish) run on the queue the workflow was started
on (the shared control queue, :data:`CONTROL_QUEUE`). If no worker of the tenant's region polls its
queue, the pull is not started within the plan's ``region_wait_s``: the run does not fall back to
another region — it reports status ``waiting`` with the reason and tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from schemas.connector import StreamState
    from schemas.reconcile import ReconcileInput
    from schemas.sync import (
        BatchRef,
        FinishInput,
        PlanInput,
        Progress,
        PullInput,
        PushInput,
        PushResult,
        RetryInput,
        RunCounts,
        SyncCarry,
        SyncInput,
        SyncPhase,
        SyncPlanRef,
        SyncStatus,
    )
    from workflows import search_attributes as sa
    from workflows.activities import SyncActivities
    from workflows.reconcile import start_reconciliation

__all__ = ["CONTROL_QUEUE", "RETRY_PATCH", "SyncWorkflow"]

_A = TypeVar("_A")
_T = TypeVar("_T")

CONTROL_QUEUE = "crmhub-control"
RETRY_PATCH = "retry-rejected-records"
"""Patch id of the retry step after the last push (issue 14 item 4): histories recorded before it
replay without the step."""

# Errors that no retry can fix: the activity layer marks them non-retryable too (ErrorKind).
_NON_RETRYABLE = ["ConfigError", "AuthError", "ReauthorizationRequired", "DataError", "PolicyError",
                  "PurposeViolation", "TransferNotPermitted", "IntegrityError", "PlanRefused"]  # fmt: skip
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=_NON_RETRYABLE,
)


@workflow.defn(name="SyncWorkflow")
class SyncWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._status = SyncStatus.RUNNING
        self._phase = SyncPhase.PLANNING
        self._counts = RunCounts()
        self._state: StreamState | None = None
        self._plan: SyncPlanRef | None = None
        self._run_id: str | None = None
        self._waiting: str | None = None
        self._message = ""
        self._input: SyncInput | None = None
        self._drift: list[str] = []  # source schema changes seen during this execution
        self._reconcile: str | None = None  # a pull's Page.reconcile: reconcile after the run (issue 13)

    # -- ops controls -----------------------------------------------------------------------------

    @workflow.signal
    def pause(self) -> None:
        """Finish the activities in flight, then wait until ``resume``."""
        self._paused = True
        self._publish()

    @workflow.signal
    def resume(self) -> None:
        self._paused = False
        self._publish()

    @workflow.query
    def progress(self) -> Progress:
        inp = self._input
        return Progress(
            tenant=inp.tenant if inp else "",
            sync_id=inp.sync_id if inp else "",
            run_id=self._run_id,
            status=SyncStatus.PAUSED if self._paused and self._status is SyncStatus.RUNNING else self._status,
            phase=self._phase,
            counts=self._counts,
            cursor=self._state.cursor if self._state else None,
            region=self._plan.region if self._plan else None,
            waiting_reason=self._waiting,
            message=self._message,
            drift=tuple(self._drift),
        )

    # -- the run ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: SyncInput) -> RunCounts:
        self._input = inp
        if inp.carry is not None:
            carry = inp.carry
            self._run_id, plan, state = carry.run_id, carry.plan, carry.state
            self._counts, seq, self._paused = carry.counts, carry.batch_seq, carry.paused
            self._drift = list(carry.drift)
            self._reconcile = carry.reconcile
            self._plan = plan
        else:
            self._run_id = str(workflow.uuid4())
            self._publish()
            plan = await self._plan_run(inp)
            state, seq = plan.start_state, 0
        self._plan, self._state = plan, state
        self._set_search_attributes(plan)
        started_seq = seq
        pending: asyncio.Task[PushResult] | None = None
        try:
            while True:
                await self._wait_while_paused()
                self._phase = SyncPhase.PULLING
                self._publish()
                batch = await self._pull(plan, state, seq)
                self._counts = self._counts.plus(
                    pulled=batch.records + batch.quarantined, deleted=batch.deleted, pages=batch.pages,
                    source_calls=batch.calls, withheld_fields=batch.withheld_fields,
                    pseudonymized=batch.pseudonymized, quarantined=batch.quarantined, batches=1,
                )  # fmt: skip
                self._drift += [d for d in batch.drift if d not in self._drift]
                self._reconcile = self._reconcile or batch.reconcile
                if pending is not None:
                    self._account(await pending)
                    pending = None
                if batch.records or batch.deleted:
                    pending = asyncio.ensure_future(self._push(plan, batch))
                state, seq = batch.next_state, seq + 1
                self._state = state
                self._publish()
                if not batch.has_more:
                    break
                if seq - started_seq >= plan.continue_as_new_after_batches:
                    if pending is not None:
                        self._account(await pending)
                        pending = None
                    carry = SyncCarry(
                        run_id=self._run_id, plan=plan, state=state, counts=self._counts, batch_seq=seq,
                        paused=self._paused, drift=tuple(self._drift), reconcile=self._reconcile,
                    )  # fmt: skip
                    workflow.continue_as_new(SyncInput(tenant=inp.tenant, sync_id=inp.sync_id, mode=plan.mode,
                                                       trigger=inp.trigger, carry=carry,
                                                       retry_rejected=inp.retry_rejected))  # fmt: skip
            if pending is not None:
                self._phase = SyncPhase.PUSHING
                self._publish()
                self._account(await pending)
                pending = None
            if workflow.patched(RETRY_PATCH):  # issue 14: dead letters a change (or the caller) retries
                await self._retry_rejected(plan, inp.retry_rejected)
        except (asyncio.CancelledError, CancelledError):
            await self._cleanup_after_cancel(plan, pending, state)
            raise
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):  # the workflow was cancelled mid-activity
                await self._cleanup_after_cancel(plan, pending, state)
                raise asyncio.CancelledError("sync cancelled") from err
            if pending is not None:  # don't leave a push running behind a failed run
                pending.cancel()
            await self._finish(plan, state, SyncStatus.FAILED, _describe(err))
            raise ApplicationError(f"sync run failed: {_describe(err)}", non_retryable=True) from err
        await self._finish(plan, state, SyncStatus.COMPLETED, "")
        if self._reconcile:  # the source lost deletes it can no longer report: compare the ids
            await start_reconciliation(
                ReconcileInput(tenant=inp.tenant, sync_id=inp.sync_id, trigger="sync", reason=self._reconcile)
            )
        return self._counts

    async def _plan_run(self, inp: SyncInput) -> SyncPlanRef:
        assert self._run_id is not None
        try:
            return await workflow.execute_activity_method(
                SyncActivities.plan_sync,
                PlanInput(tenant=inp.tenant, sync_id=inp.sync_id, run_id=self._run_id, mode=inp.mode),
                task_queue=workflow.info().task_queue,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=_NON_RETRYABLE),
                summary=f"plan {inp.tenant}/{inp.sync_id}: check instruction and transfer rules",
            )
        except ActivityError as err:
            refused = _cause_type(err) in ("PurposeViolation", "TransferNotPermitted", "PlanRefused")
            self._status = SyncStatus.REFUSED if refused else SyncStatus.FAILED
            self._phase = SyncPhase.DONE
            self._message = _describe(err)
            self._publish()
            raise ApplicationError(
                f"sync refused: {self._message}" if refused else self._message,
                type="SyncRefused" if refused else "SyncFailed",
                non_retryable=True,
            ) from err

    async def _pull(self, plan: SyncPlanRef, state: StreamState, seq: int) -> BatchRef:
        pull = PullInput(
            plan=plan, state=state, batch_seq=seq,
            max_pages=plan.pages_per_activity,
            max_records=plan.records_per_batch,
            time_budget_s=plan.activity_time_budget_s,
        )  # fmt: skip
        return await self._region_activity(
            SyncActivities.pull_batch, pull, plan,
            summary=f"pull {plan.source}/{plan.source_stream} batch {seq} after {state.cursor or 'start'}",
            start_to_close=timedelta(seconds=plan.activity_time_budget_s * 5),
        )  # fmt: skip

    async def _push(self, plan: SyncPlanRef, batch: BatchRef) -> PushResult:
        return await self._region_activity(
            SyncActivities.push_batch, PushInput(plan=plan, batch=batch), plan,
            summary=f"push batch {batch.seq} ({batch.records} records) to "
            f"{plan.destination}/{plan.destination_stream}",
            start_to_close=timedelta(minutes=30),
        )  # fmt: skip

    async def _region_activity(
        self,
        activity: Callable[[SyncActivities, _A], _T],
        arg: _A,
        plan: SyncPlanRef,
        *,
        summary: str,
        start_to_close: timedelta,
    ) -> _T:
        """Run a data-touching activity on the tenant's region queue, waiting (and saying so) while
        no worker of that region polls it. Never falls back to another region."""
        attempt = 0
        while True:
            # Back off while no worker of the region shows up (at most 15 minutes between checks),
            # so a long wait does not grow the history quickly.
            wait_s = min(plan.region_wait_s * 2**attempt, max(plan.region_wait_s, 900.0))
            try:
                result = await workflow.execute_activity_method(
                    activity,
                    arg,
                    task_queue=plan.task_queue,
                    schedule_to_start_timeout=timedelta(seconds=wait_s),
                    start_to_close_timeout=start_to_close,
                    heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s),
                    retry_policy=_RETRY,
                    summary=summary,
                )
            except ActivityError as err:
                if isinstance(err.cause, TimeoutError) and err.cause.type is TimeoutType.SCHEDULE_TO_START:
                    self._status = SyncStatus.WAITING
                    self._waiting = (
                        f"no worker for region {plan.region!r} is polling task queue {plan.task_queue!r}; "
                        f"this tenant's data is only processed there — start one with: "
                        f"crmhub worker --region {plan.region}"
                    )
                    self._publish()
                    attempt += 1
                    continue
                raise
            if self._status is SyncStatus.WAITING:
                self._status, self._waiting = SyncStatus.RUNNING, None
                self._publish()
            return result

    async def _retry_rejected(self, plan: SyncPlanRef, everything: bool) -> None:
        """Retry dead letters after the last push (at most ``plan.retry_rejected_per_run``)."""
        if plan.retry_rejected_per_run < 1:
            return
        self._phase = SyncPhase.PUSHING
        self._publish()
        result = await self._region_activity(
            SyncActivities.retry_rejected,
            RetryInput(plan=plan, limit=plan.retry_rejected_per_run, everything=everything),
            plan,
            summary=f"retry {'every' if everything else 'changed'} rejected record (at most "
            f"{plan.retry_rejected_per_run}) to {plan.destination}/{plan.destination_stream}",
            start_to_close=timedelta(minutes=30),
        )
        self._counts = self._counts.plus(
            retried=result.retried, retry_resolved=result.resolved, retry_gone=result.gone,
            pushed=result.pushed, created=result.created, updated=result.updated, failed=result.failed,
            skipped=result.skipped, source_calls=result.source_calls,
            destination_calls=result.destination_calls,
        )  # fmt: skip

    def _account(self, result: PushResult) -> None:
        self._counts = self._counts.plus(
            pushed=result.pushed, created=result.created, updated=result.updated, failed=result.failed,
            skipped=result.skipped, destination_calls=result.calls,
        )  # fmt: skip

    async def _wait_while_paused(self) -> None:
        if self._paused:
            self._publish()
            await workflow.wait_condition(lambda: not self._paused)

    async def _finish(self, plan: SyncPlanRef, state: StreamState, status: SyncStatus, message: str) -> None:
        self._phase = SyncPhase.FINISHING
        self._publish()
        await workflow.execute_activity_method(
            SyncActivities.finish_run,
            FinishInput(plan=plan, final_state=state, counts=self._counts, status=status, message=message),
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
            summary=f"finish run: {status.value}, store cursor, sign ledger checkpoint",
        )
        self._status, self._phase, self._message = status, SyncPhase.DONE, message
        self._publish()

    async def _cleanup_after_cancel(
        self, plan: SyncPlanRef, pending: asyncio.Task[PushResult] | None, state: StreamState
    ) -> None:
        """Cancellation: let nothing half-done linger — discard staged batches, record the run."""
        self._status = SyncStatus.CANCELLED
        self._publish()
        if pending is not None:
            pending.cancel()
        await asyncio.shield(
            workflow.execute_activity_method(
                SyncActivities.discard_run_staging,
                plan,
                task_queue=plan.task_queue,
                start_to_close_timeout=timedelta(minutes=5),
                summary="cancelled: delete this run's staged batches",
            )
        )
        await asyncio.shield(self._finish(plan, state, SyncStatus.CANCELLED, "cancelled by an operator"))

    # -- visibility -------------------------------------------------------------------------------

    def _set_search_attributes(self, plan: SyncPlanRef) -> None:
        workflow.upsert_search_attributes(
            [
                sa.TENANT.value_set(plan.tenant),
                sa.SOURCE.value_set(plan.source),
                sa.DESTINATION.value_set(plan.destination),
                sa.PURPOSE.value_set(plan.purpose),
                sa.REGION.value_set(plan.region),
                sa.STATUS.value_set(self._status.value),
            ]
        )

    def _publish(self) -> None:
        """Mirror progress into the UI: current details and the status search attribute."""
        p = self.progress()
        c = p.counts
        lines = [
            f"**{p.status.value}** · phase {p.phase.value} · run {p.run_id}",
            f"pulled {c.pulled:,} · pushed {c.pushed:,} · failed {c.failed:,} · deleted {c.deleted:,} · "
            f"withheld field values {c.withheld_fields:,} · batches {c.batches}"
            + (f" · quarantined {c.quarantined:,}" if c.quarantined else "")
            + (f" · skipped by the write mode {c.skipped:,}" if c.skipped else ""),
            f"cursor {p.cursor or '-'} · region {p.region or '-'}",
        ]
        if p.drift:
            lines.append("source schema changed during the run: " + "; ".join(p.drift))
        if p.waiting_reason:
            lines.append(f"waiting: {p.waiting_reason}")
        if p.message:
            lines.append(p.message)
        workflow.set_current_details("\n\n".join(lines))
        if self._plan is not None:
            workflow.upsert_search_attributes([sa.STATUS.value_set(p.status.value)])


def _cause_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _describe(err: BaseException) -> str:
    """The innermost failure message (activities already keep PII out of messages)."""
    while err.__cause__ is not None and isinstance(err, ActivityError):
        err = err.__cause__
    return str(err) or type(err).__name__
