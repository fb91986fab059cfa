"""Delete reconciliations through Temporal, for the CLI and the web app: start one (workflow id
``reconcile:{tenant}:{sync}``), ask its progress, and manage its Temporal Schedule."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, ScheduleActionStartWorkflow, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.schedules import install_schedule, interval_schedule, next_runs
from schemas.errors import ConfigError
from schemas.reconcile import ReconcileInput, ReconcileProgress, ReconcileResult, reconcile_workflow_id
from workflows.reconcile import ReconcileTriggerWorkflow, ReconcileWorkflow
from workflows.sync import CONTROL_QUEUE

__all__ = ["progress", "schedule", "schedule_id", "start"]


def schedule_id(tenant: str, sync_id: str) -> str:
    return f"reconcile-schedule:{tenant}:{sync_id}"


async def start(
    client: Client,
    tenant: str,
    sync_id: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    task_queue: str = CONTROL_QUEUE,
) -> WorkflowHandle[ReconcileWorkflow, ReconcileResult]:
    """Start the sync's reconciliation; a :class:`ConfigError` while one is running (its options
    may differ: a dry run must not join a deleting one, nor the reverse)."""
    try:
        return await client.start_workflow(
            ReconcileWorkflow.run,
            ReconcileInput(tenant=tenant, sync_id=sync_id, dry_run=dry_run, force=force),
            id=reconcile_workflow_id(tenant, sync_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"reconcile deletes of sync {sync_id} of tenant {tenant}"
            + (" (dry run)" if dry_run else ""),
        )
    except WorkflowAlreadyStartedError:
        raise ConfigError(
            f"a reconciliation of sync {sync_id!r} is running; follow it in the Temporal UI "
            f"(workflow {reconcile_workflow_id(tenant, sync_id)}) and start another after it ended"
        ) from None


async def progress(handle: WorkflowHandle[ReconcileWorkflow, ReconcileResult]) -> ReconcileProgress | None:
    """The reconciliation's progress query."""
    result: ReconcileProgress | None = await handle.query(ReconcileWorkflow.progress)
    return result


async def schedule(
    client: Client,
    tenant: str,
    sync_id: str,
    every: timedelta,
    *,
    paused: bool = False,
    task_queue: str = CONTROL_QUEUE,
) -> tuple[str, tuple[str, ...]]:
    """Create or update the sync's reconciliation schedule (one every ``every``, a slot skipped while
    one runs); its id and next runs."""
    if every < timedelta(hours=1):
        raise ConfigError(
            "a reconciliation lists every id of the source: schedule it at most hourly (--every 1d)"
        )
    action = ScheduleActionStartWorkflow(
        ReconcileTriggerWorkflow.run,
        ReconcileInput(tenant=tenant, sync_id=sync_id, trigger="schedule"),
        id=f"reconcile-trigger:{tenant}:{sync_id}",
        task_queue=task_queue,
    )
    sid = schedule_id(tenant, sync_id)
    sched = interval_schedule(action, every, note="crmhub delete reconciliation", paused=paused)
    handle = await install_schedule(client, sid, sched)
    return sid, next_runs(await handle.describe())
