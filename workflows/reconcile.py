"""``ReconcileWorkflow``: find the records that left a sync's source without a readable delete and
delete them at the destination (issue 13; the activities and guards: :mod:`workflows.reconcile_activities`).

begin (control queue: fix T, the moment the listing begins) → list the source's live ids, a run of
pages per activity on the tenant's region queue, resuming from the listing's state → apply (judge:
complete? dry run? more than ``max_delete_fraction``? → delete the id-map entries written before T
that the listing lacks, in batches, lineage) → a :class:`~schemas.reconcile.ReconcileResult`.

A listing activity that fails ``list_attempts`` times ends the listing *incomplete*: the apply step
then deletes nothing and says why. Workflow id ``reconcile:{tenant}:{sync}``
(:func:`start_reconciliation`); started by ``crmhub sync reconcile``, by a sync run whose pull
reported ``Page.reconcile``, or by its Temporal Schedule through :class:`ReconcileTriggerWorkflow`.
No I/O here: only references cross (ids, counts, the listing state).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from schemas.connector import StreamState
    from schemas.reconcile import (
        ApplyInput,
        ListInput,
        ReconcileInput,
        ReconcileOutcome,
        ReconcilePlan,
        ReconcileProgress,
        ReconcileResult,
        reconcile_workflow_id,
    )
    from workflows.reconcile_activities import ReconcileActivities

__all__ = ["ReconcileTriggerWorkflow", "ReconcileWorkflow", "start_reconciliation"]

# Errors no retry can fix (the activity layer marks them non-retryable too).
_NON_RETRYABLE = ["ConfigError", "AuthError", "ReauthorizationRequired", "DataError", "PolicyError",
                  "TransferNotPermitted", "IntegrityError"]  # fmt: skip


def _retry(attempts: int = 0) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        maximum_attempts=attempts,
        non_retryable_error_types=_NON_RETRYABLE,
    )


@workflow.defn(name="ReconcileWorkflow")
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._progress: ReconcileProgress | None = None

    @workflow.query
    def progress(self) -> ReconcileProgress | None:
        return self._progress

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileResult:
        self._progress = ReconcileProgress(
            tenant=inp.tenant, sync_id=inp.sync_id, dry_run=inp.dry_run, reason=inp.reason or inp.trigger
        )
        self._publish()
        plan: ReconcilePlan = await workflow.execute_activity_method(
            ReconcileActivities.begin_reconcile,
            inp,
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_retry(5),
            summary=f"reconcile {inp.tenant}/{inp.sync_id}: load the sync, note when the listing begins",
        )
        self._update(run_id=plan.run_id, phase="listing")
        state, seq = StreamState(), 0
        apply = ApplyInput(plan=plan, complete=True)
        while True:
            try:
                chunk = await workflow.execute_activity_method(
                    ReconcileActivities.list_source_ids,
                    ListInput(plan=plan, state=state, seq=seq),
                    task_queue=plan.task_queue,
                    start_to_close_timeout=timedelta(seconds=plan.activity_time_budget_s * 5),
                    heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s),
                    retry_policy=_retry(plan.list_attempts),
                    summary=f"list the ids of {plan.source}/{plan.source_stream} (part {seq})",
                )
            except ActivityError as err:
                apply = apply.model_copy(update={"complete": False, "why_incomplete": describe(err)})
                break
            p = self._progress
            assert p is not None
            apply = apply.model_copy(
                update={
                    "list_pages": apply.list_pages + chunk.pages,
                    "list_calls": apply.list_calls + chunk.calls,
                }
            )
            self._update(
                listed=p.listed + chunk.listed, list_pages=apply.list_pages, list_calls=apply.list_calls
            )
            if not chunk.supported:
                apply = apply.model_copy(update={"complete": False, "unsupported": True})
                break
            if not chunk.has_more:
                break
            state, seq = chunk.next_state, seq + 1
        self._update(phase="deleting")
        result: ReconcileResult = await workflow.execute_activity_method(
            ReconcileActivities.apply_reconcile,
            apply,
            task_queue=plan.task_queue,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout_s),
            retry_policy=_retry(),
            summary=f"reconcile {plan.destination}/{plan.destination_stream}: delete what vanished"
            + (" (dry run)" if plan.dry_run else ""),
        )
        self._update(phase="done", result=result)
        if result.outcome is ReconcileOutcome.FAILED:  # pragma: no cover - apply raises instead
            raise ApplicationError(result.message, non_retryable=True)
        return result

    def _update(self, **fields: object) -> None:
        assert self._progress is not None
        self._progress = self._progress.model_copy(update=fields)
        self._publish()

    def _publish(self) -> None:
        p = self._progress
        if p is None:
            return
        lines = [
            f"**reconcile {p.phase}** · run {p.run_id or '-'} · reason {p.reason or '-'}"
            + (" · dry run" if p.dry_run else ""),
            f"listed {p.listed:,} ids in {p.list_pages:,} pages ({p.list_calls:,} calls)",
        ]
        if p.result is not None:
            lines.append(f"{p.result.outcome.value}: {p.result.message}")
        workflow.set_current_details("\n\n".join(lines))


def describe(err: BaseException) -> str:
    """The innermost failure message of an activity error (activities keep PII out of messages)."""
    while err.__cause__ is not None and isinstance(err, ActivityError):
        err = err.__cause__
    return str(err) or type(err).__name__


async def start_reconciliation(inp: ReconcileInput) -> bool:
    """From a workflow: start the sync's reconciliation as an abandoned child under its fixed id, on
    this workflow's queue; False when one is already running (it covers this request too: its
    listing begins after the request was stored, or it leaves the request set)."""
    try:
        await workflow.start_child_workflow(
            ReconcileWorkflow.run,
            inp,
            id=reconcile_workflow_id(inp.tenant, inp.sync_id),
            task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"reconcile deletes of sync {inp.sync_id} of tenant {inp.tenant} ({inp.trigger})",
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


@workflow.defn(name="ReconcileTriggerWorkflow")
class ReconcileTriggerWorkflow:
    """What a reconciliation's Temporal Schedule starts (a schedule suffixes the ids of the workflows
    it starts; this starts the reconciliation under its fixed id, or nothing when one runs)."""

    @workflow.run
    async def run(self, inp: ReconcileInput) -> str:
        if await start_reconciliation(inp):
            return "started"
        workflow.set_current_details("a reconciliation of this sync was in progress: nothing started")
        return "already running"
