"""``NoticeDeliveryWorkflow`` (id ``notice:<notice id>``): deliver one notice to each contact it has
not reached, each send an activity retried with backoff (SMTP relay or webhook down: the next attempt
comes 1 s, 2 s, 4 s … at most 10 min later, for up to 3 days). Only ids cross Temporal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas.notices import DeliverInput, NoticeDeliveryInput, NoticeDeliveryResult
    from workflows.notice_activities import NoticeActivities

__all__ = ["NOTICE_RETRY", "NoticeDeliveryWorkflow"]

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
