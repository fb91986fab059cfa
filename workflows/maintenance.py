"""Maintenance workflows, started by Temporal Schedules (:mod:`api.maintenance`) on the control queue::

    RetentionPurgeWorkflow    activity purge_retention     workflow id maintenance:retention-purge
    KeyRotationCheckWorkflow  activity check_key_rotation  workflow id maintenance:key-rotation-check
    IncidentWatchWorkflow     activity watch_incidents     workflow id maintenance:incident-watch

Each is one activity call by method reference (the activities live in :mod:`workflows.maintenance_activities`,
registered on the control worker), deterministic and without I/O. The activities are idempotent,
so retries and a re-run after a failed schedule slot are harmless; errors that no retry can fix
(bad configuration, an integrity failure) end the run, and the next schedule slot tries again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas.maintenance import (
        IncidentWatchInput,
        IncidentWatchResult,
        KeyRotationInput,
        KeyRotationResult,
        RetentionPurgeInput,
        RetentionPurgeResult,
    )
    from workflows.maintenance_activities import MaintenanceActivities

__all__ = ["MAINTENANCE_RETRY", "IncidentWatchWorkflow", "KeyRotationCheckWorkflow", "RetentionPurgeWorkflow"]

MAINTENANCE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=10,
    non_retryable_error_types=["ConfigError", "IntegrityError"],
)
"""Bounded: a purge that keeps failing gives way to the next schedule slot instead of piling up."""

_START_TO_CLOSE = timedelta(minutes=30)
_HEARTBEAT = timedelta(minutes=2)  # the activities heartbeat after each tenant


@workflow.defn(name="RetentionPurgeWorkflow")
class RetentionPurgeWorkflow:
    """Delete, for every tenant, staging, dead letters and id-map rows past their retention; the
    result counts what was deleted per tenant (each deletion is also a ``delete`` lineage event)."""

    @workflow.run
    async def run(self, inp: RetentionPurgeInput) -> RetentionPurgeResult:
        run_id = inp.run_id or f"retention:{workflow.info().run_id}"
        result = await workflow.execute_activity_method(
            MaintenanceActivities.purge_retention,
            inp.model_copy(update={"run_id": run_id}),
            start_to_close_timeout=_START_TO_CLOSE,
            heartbeat_timeout=_HEARTBEAT,
            retry_policy=MAINTENANCE_RETRY,
            summary="purge staging, dead letters and id map past retention",
        )
        totals = result.counts()
        workflow.set_current_details(
            f"{len(result.tenants)} tenants: {totals['staging_parts']} staged parts, "
            f"{totals['dead_letters']} dead letters, {totals['id_map_rows']} id-map rows deleted"
        )
        return result


@workflow.defn(name="KeyRotationCheckWorkflow")
class KeyRotationCheckWorkflow:
    """Rotate every tenant data key (the payload codec's included) past its use share or maximum age;
    the result lists what was rotated."""

    @workflow.run
    async def run(self, inp: KeyRotationInput) -> KeyRotationResult:
        result = await workflow.execute_activity_method(
            MaintenanceActivities.check_key_rotation,
            inp,
            start_to_close_timeout=_START_TO_CLOSE,
            heartbeat_timeout=_HEARTBEAT,
            retry_policy=MAINTENANCE_RETRY,
            summary=f"rotate data keys past {inp.use_share:.0%} of their uses or {inp.max_age_days} days",
        )
        workflow.set_current_details(f"{result.checked} keys checked, {len(result.rotated)} rotated")
        return result


@workflow.defn(name="IncidentWatchWorkflow")
class IncidentWatchWorkflow:
    """Append the ledger events earlier commands owed, verify every tenant's ledger, then check codec
    tokens for misuse; the result names the incidents opened (or already covering a finding)."""

    @workflow.run
    async def run(self, inp: IncidentWatchInput) -> IncidentWatchResult:
        result = await workflow.execute_activity_method(
            MaintenanceActivities.watch_incidents,
            inp,
            start_to_close_timeout=_START_TO_CLOSE,
            heartbeat_timeout=_HEARTBEAT,
            retry_policy=MAINTENANCE_RETRY,
            summary="append owed ledger events; verify the ledgers; check codec tokens for misuse",
        )
        workflow.set_current_details(
            f"{result.appended} owed ledger events appended; ledgers failing: {len(result.ledger_failed)} "
            f"({len(result.ledger_opened)} incidents opened); codec tokens misused: {len(result.opened)} "
            f"opened, {len(result.covered)} already open, {len(result.no_breach)} no breach"
        )
        return result
