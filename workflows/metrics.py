"""crmhub's record counters, emitted through the Temporal SDK's metric meter so they appear wherever the
worker's runtime exports metrics (Prometheus when ``worker.metrics_port`` is set, see
``workers.client.make_runtime``)::

    crmhub_records_pulled   records staged by pull_batch (after projection)       pull_batch
    crmhub_records_quarantined  records pull_batch held back: a value no longer
                            fit its field's planned type                           pull_batch
    crmhub_records_pushed   records the destination accepted (created + updated)   push_batch
    crmhub_records_failed   records dead-lettered at the destination (upserts and
                            deletes it refused)                                    push_batch
    crmhub_records_deleted  records deleted at the destination (source deletes
                            propagated through the id map)                         push_batch

Labels: ``tenant``, ``source``, ``destination`` (connector names), plus the SDK's own
(``namespace``, ``task_queue``, ``activity_type``). They are counted once per activity, after its
lineage is appended; a retry that only returns an already-finished result counts nothing again.
Only ids and counts become labels or values — never record content.
"""

from __future__ import annotations

from typing import Final

from temporalio import activity

from schemas.sync import SyncPlanRef

__all__ = ["DELETED", "FAILED", "PULLED", "PUSHED", "QUARANTINED", "count_pull", "count_push"]

PULLED: Final = "crmhub_records_pulled"
PUSHED: Final = "crmhub_records_pushed"
FAILED: Final = "crmhub_records_failed"
DELETED: Final = "crmhub_records_deleted"
QUARANTINED: Final = "crmhub_records_quarantined"

_DESCRIPTIONS: Final = {
    PULLED: "Records pulled from the source and staged (after projection to the instruction)",
    PUSHED: "Records the destination accepted (created or updated)",
    FAILED: "Records dead-lettered at the destination (refused upserts and deletes)",
    DELETED: "Records deleted at the destination (source deletes propagated)",
    QUARANTINED: "Records held back at the pull: a value no longer fit its field's planned type",
}


def _add(plan: SyncPlanRef, counts: dict[str, int]) -> None:
    meter = activity.metric_meter().with_additional_attributes(
        {"tenant": plan.tenant, "source": plan.source, "destination": plan.destination}
    )
    for name, value in counts.items():
        # Zero is added too, so every series exists from a sync's first batch (rate() needs it).
        meter.create_counter(name, _DESCRIPTIONS[name], "records").add(value)


def count_pull(plan: SyncPlanRef, records: int, quarantined: int = 0) -> None:
    """Count the records one ``pull_batch`` staged and quarantined. Call inside the activity."""
    _add(plan, {PULLED: records, QUARANTINED: quarantined})


def count_push(plan: SyncPlanRef, *, pushed: int, failed: int, deleted: int) -> None:
    """Count what one ``push_batch`` wrote, dead-lettered and deleted. Call inside the activity."""
    _add(plan, {PUSHED: pushed, FAILED: failed, DELETED: deleted})
