"""Controller notices on Temporal (control queue). Only ids and counts cross Temporal.

- ``NoticeDeliveryWorkflow`` (id ``notice:<notice id>``): deliver one notice to each contact it has
  not reached, each send an activity retried with backoff (SMTP relay or webhook down: the next
  attempt comes 1 s, 2 s, 4 s … at most 10 min later, for up to 3 days).
- ``NoticeDispatchWorkflow`` (run by the ``crmhub-notice-dispatch`` schedule, :mod:`api.maintenance`):
  one pass that starts a ``NoticeDeliveryWorkflow`` for every pending notice, oldest first, bounded
  (at most ``limit`` started, ``max_scan`` looked at; the rest waits for the next pass). The
  deliveries are abandoned children: they outlive the pass. Their id reuse policy admits a new run
  only after a failed one, so a delivered notice is never started again; one already running is
  skipped. Each send stays idempotent per contact in the database (:func:`services.notices.deliver`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from schemas.notices import (
        DeliverInput,
        NoticeDeliveryInput,
        NoticeDeliveryResult,
        NoticeDispatchInput,
        NoticeDispatchResult,
        PendingNoticesInput,
        notice_workflow_id,
    )
    from workflows.notice_activities import NoticeActivities

__all__ = ["NOTICE_RETRY", "NoticeDeliveryWorkflow", "NoticeDispatchWorkflow"]

NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["ConfigError"],
)


@workflow.defn(name="NoticeDeliveryWorkflow")
class NoticeDeliveryWorkflow:
    """Every pending delivery of one notice, in parallel; returns the contacts reached."""

    @workflow.run
    async def run(self, inp: NoticeDeliveryInput) -> NoticeDeliveryResult:
        contacts = await workflow.execute_activity_method(
            NoticeActivities.pending_notice_contacts,
            inp,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary=f"contacts notice {inp.notice_id} has not reached",
        )
        sends = [
            workflow.execute_activity_method(
                NoticeActivities.deliver_notice,
                DeliverInput(notice_id=inp.notice_id, contact_id=c),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(days=3),
                retry_policy=NOTICE_RETRY,
                summary=f"deliver notice {inp.notice_id} to {c}",
            )
            for c in contacts
        ]
        await asyncio.gather(*sends)
        workflow.set_current_details(f"notice {inp.notice_id} delivered to {len(contacts)} contacts")
        return NoticeDeliveryResult(notice_id=inp.notice_id, delivered=tuple(contacts))


@workflow.defn(name="NoticeDispatchWorkflow")
class NoticeDispatchWorkflow:
    """One dispatch pass over the pending notices; returns what it started and skipped."""

    @workflow.run
    async def run(self, inp: NoticeDispatchInput) -> NoticeDispatchResult:
        started: list[str] = []
        skipped = scanned = 0
        after = ""
        while len(started) < inp.limit and scanned < inp.max_scan:
            asked = min(inp.limit, inp.max_scan - scanned)
            page = await workflow.execute_activity_method(
                NoticeActivities.list_pending_notices,
                PendingNoticesInput(after=after, limit=asked),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["ConfigError"]),
                summary=f"up to {asked} pending notices",
            )
            looked = page[: inp.limit - len(started)]
            outcomes = await asyncio.gather(*(self._start(n) for n in looked))
            started += [n for n, ok in zip(looked, outcomes, strict=True) if ok]
            skipped += outcomes.count(False)
            scanned += len(looked)
            if len(page) < asked:
                break
            after = looked[-1]
        workflow.set_current_details(
            f"{len(started)} deliveries started, {skipped} already running, {scanned} pending looked at"
        )
        return NoticeDispatchResult(started=tuple(started), skipped=skipped, scanned=scanned)

    @staticmethod
    async def _start(notice_id: str) -> bool:
        """Start the notice's delivery; False when a run of it is already running or completed."""
        try:
            await workflow.start_child_workflow(
                NoticeDeliveryWorkflow.run,
                NoticeDeliveryInput(notice_id=notice_id),
                id=notice_workflow_id(notice_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                static_summary=f"deliver notice {notice_id}",
            )
        except WorkflowAlreadyStartedError:
            return False
        return True
