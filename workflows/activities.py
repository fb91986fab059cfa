"""The sync activities, registered under stable names: ``plan_sync``, ``pull_batch``, ``push_batch``,
``retry_rejected``, ``finish_run``, ``discard_batch``, ``discard_run_staging`` (the workflow calls
them by method reference, ``workflow.execute_activity_method(SyncActivities.pull_batch, …)``; the names keep
recorded histories replayable). DESIGN.md §1 is the walk they implement::

    plan_sync    (control queue) instruction + transfer checks → SyncPlanRef        workflows/plan.py
    pull_batch   (region queue)  pages → project → pseudonymize → transform → seal  workflows/pull.py
                                 → stage; heartbeats its resume point
    push_batch   (region queue)  staged batch → upsert by external id → id map,     workflows/push.py
                                 dead letters, deletes → lineage → staging deleted
    retry_rejected (region queue) dead letters → read again by id → govern → push   workflows/retry.py
    finish_run   (control queue) cursor (completed runs only), run row, retention purge, ledger checkpoint
    discard_*    (region queue)  cancellation cleanup of staged batches

Only references cross Temporal (:mod:`schemas.sync`); records live sealed in ``staging_batches``
between pull and push (format: :mod:`workflows.staging`). Every activity maps errors at its
boundary (:mod:`workflows.errors`): crmhub errors by their kind, anything else retryable with a
message that names only the exception type. Pull and push are synchronous (vendor SDKs are): the
worker runs them on its thread pool. Lineage is appended once per activity, after its data work;
a worker that dies hard between that append and its next heartbeat reaching Temporal can make the
retry append the batch's events again (at-least-once), nothing else repeats.
"""

from __future__ import annotations

from temporalio import activity

from schemas.errors import ConfigError
from schemas.lineage import DetailValue
from schemas.sync import (
    BatchRef,
    FinishInput,
    PlanInput,
    PullInput,
    PushInput,
    PushResult,
    RetryInput,
    RetryResult,
    SyncPlanRef,
    SyncStatus,
)
from services.notices import NoticeKind
from services.wiring import ActivityDeps
from store import runs as run_store
from store import staging as staging_store
from store import syncs as sync_store
from workflows.context import ActivityKit
from workflows.plan import plan_sync
from workflows.pull import pull_batch
from workflows.push import delete_staging, push_batch
from workflows.retry import retry_rejected

__all__ = ["PAGE_SIZE", "PART_RECORDS", "SyncActivities"]

PAGE_SIZE = 2000
"""Records asked for per ``read_page`` (connectors cap it at their vendor's page size)."""
PART_RECORDS = 2000
"""Records per sealed staging part: the unit of resumption for pull and push."""


class SyncActivities:
    """The activities of :class:`~workflows.sync.SyncWorkflow`, bound to injected dependencies.

    One instance serves every activity thread of a worker and keeps no per-run state (a run's state
    is in the workflow, the store and heartbeat details).
    """

    def __init__(
        self, deps: ActivityDeps, *, page_size: int = PAGE_SIZE, part_records: int = PART_RECORDS
    ) -> None:
        if page_size < 1 or part_records < 1:
            raise ConfigError("page_size and part_records must be at least 1")
        self.deps = deps
        self.kit = ActivityKit(deps)
        self.page_size = page_size
        self.part_records = part_records

    @activity.defn(name="plan_sync")
    def plan_sync(self, inp: PlanInput) -> SyncPlanRef:
        """Check the run against the processing instruction and the transfer rules; return its plan.

        A refusal is recorded (``refusal`` lineage event, refused run) and raised non-retryable as
        ``PurposeViolation`` or ``TransferNotPermitted``, its message naming the rule, never a value.
        """
        return self.kit.guarded("plan_sync", lambda: plan_sync(self.kit, inp))

    @activity.defn(name="pull_batch")
    def pull_batch(self, inp: PullInput) -> BatchRef:
        """Read up to ``max_pages`` / ``max_records`` / ``time_budget_s`` of source pages, keep only what
        the instruction allows, seal and stage it; ``records=0, deleted=0`` means nothing was staged."""
        return self.kit.guarded(
            "pull_batch",
            lambda: pull_batch(self.kit, inp, page_size=self.page_size, part_records=self.part_records),
        )

    @activity.defn(name="push_batch")
    def push_batch(self, inp: PushInput) -> PushResult:
        """Upsert a staged batch at the destination (a retry duplicates nothing), dead-letter what it
        refuses, propagate deletes, record lineage, then delete the staged batch."""
        return self.kit.guarded("push_batch", lambda: push_batch(self.kit, inp))

    @activity.defn(name="retry_rejected")
    def retry_rejected(self, inp: RetryInput) -> RetryResult:
        """Retry dead letters: read their records again at the source, govern them under the current
        instruction and mapping, and push them; resolved, refused again, or gone (workflows/retry.py)."""
        return self.kit.guarded("retry_rejected", lambda: retry_rejected(self.kit, inp))

    @activity.defn(name="finish_run")
    def finish_run(self, inp: FinishInput) -> None:
        """Close the run: the final cursor on the sync (completed runs only), the run's status and
        counts, a purge of staging past its retention, and a signed ledger checkpoint."""
        self.kit.guarded("finish_run", lambda: self._finish(inp))

    def _finish(self, inp: FinishInput) -> None:
        plan, deps = inp.plan, self.deps
        now = deps.clock()
        with deps.engine.begin() as conn:
            if run_store.get_run(conn, plan.run_id) is None:
                run_store.start_run(
                    conn,
                    run_id=plan.run_id,
                    tenant=plan.tenant,
                    sync_id=plan.sync_id,
                    mode=plan.mode.value,
                    trigger="workflow",
                    status=inp.status.value,
                    now=inp.started_at or now,
                )
            if inp.status is SyncStatus.COMPLETED:
                cursor = inp.final_state.model_copy(update={"page_token": None})
                sync_store.update_cursor(
                    conn, plan.tenant, plan.sync_id, cursor, now=now, last_run_id=plan.run_id,
                    status=inp.status.value,
                )  # fmt: skip
            else:
                sync_store.set_sync_status(
                    conn, plan.tenant, plan.sync_id, inp.status.value, now=now, last_run_id=plan.run_id
                )
            run_store.finish_run(
                conn,
                plan.run_id,
                status=inp.status.value,
                counts=inp.counts.model_dump(),
                message=inp.message,
                now=now,
            )
            purged = staging_store.purge_expired_staging(conn, now=now)
        if purged:
            activity.logger.info("purged %d staged parts past their retention", purged)
        if inp.status is SyncStatus.FAILED:
            facts: dict[str, DetailValue] = {
                "sync_id": plan.sync_id,
                "run_id": plan.run_id,
                "failed_records": inp.counts.failed,
            }
            self.kit.notify(plan.tenant, NoticeKind.RUN_FAILED, plan.sync_id, facts)
        self.kit.ledger(plan.tenant).checkpoint(deps.signer)

    @activity.defn(name="discard_batch")
    def discard_batch(self, inp: PushInput) -> None:
        """Delete one staged batch (cancellation cleanup); deleting twice is harmless."""
        self.kit.guarded(
            "discard_batch", lambda: delete_staging(self.kit, inp.plan.tenant, inp.batch.batch_id)
        )

    @activity.defn(name="discard_run_staging")
    def discard_run_staging(self, plan: SyncPlanRef) -> int:
        """Delete every staged batch of the run (cancellation cleanup); returns the parts deleted."""
        return self.kit.guarded("discard_run_staging", lambda: self._discard_run(plan))

    def _discard_run(self, plan: SyncPlanRef) -> int:
        with self.deps.engine.begin() as conn:
            return staging_store.delete_staged_for_run(conn, plan.tenant, plan.sync_id, plan.run_id)
