"""``DataSubjectRequestWorkflow`` (workflow id ``dsr:{tenant}:{request_id}``): export, erase,
restrict (or object to the processing of) or rectify one data subject's data.

1. ``dsr_plan`` on the control queue: the tenant exists; its region's task queue.
2. ``dsr_export``, ``dsr_erase``, ``dsr_restrict`` or ``dsr_rectify`` on that **region** queue (they
   open the tenant's sealed data and talk to its CRMs, so they run only where the tenant's data may be
   processed).

Only the request id, the vault-sealed subject and counts cross Temporal. Deterministic, no I/O.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas.dsr import DsrInput, DsrKind, DsrResult
    from workflows.dsr_activities import DsrActivities
    from workflows.errors import NON_RETRYABLE_TYPES

__all__ = ["DSR_RETRY", "DataSubjectRequestWorkflow"]

DSR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
    non_retryable_error_types=list(NON_RETRYABLE_TYPES),
)


@workflow.defn(name="DataSubjectRequestWorkflow")
class DataSubjectRequestWorkflow:
    """Plan on the control queue, then export or erase on the tenant's region queue."""

    @workflow.run
    async def run(self, inp: DsrInput) -> DsrResult:
        plan = await workflow.execute_activity_method(
            DsrActivities.dsr_plan,
            inp,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=DSR_RETRY,
            summary=f"plan {inp.kind.value} request {inp.request_id}",
        )
        workflow.set_current_details(f"{inp.kind.value} on {plan.task_queue} over {len(plan.syncs)} syncs")
        act = {
            DsrKind.EXPORT: DsrActivities.dsr_export,
            DsrKind.ERASE: DsrActivities.dsr_erase,
            DsrKind.RESTRICT: DsrActivities.dsr_restrict,
            DsrKind.OBJECT: DsrActivities.dsr_restrict,
            DsrKind.RECTIFY: DsrActivities.dsr_rectify,
        }[inp.kind]
        result = await workflow.execute_activity_method(
            act,
            inp,
            task_queue=plan.task_queue,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=DSR_RETRY,
            summary=f"{inp.kind.value} subject of request {inp.request_id}"
            + (" and delete at destinations" if inp.propagate else ""),
        )
        workflow.set_current_details(
            f"{inp.kind.value}: {result.held} items held by crmhub, {result.lineage_events} lineage events, "
            f"{len(result.destinations)} destinations"
        )
        return result
