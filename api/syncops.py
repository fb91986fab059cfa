"""Operations on syncs through Temporal, shared by the CLI, the demo and the web app: start a run
(two triggers meet one workflow), read its progress, pause/resume/cancel it, and manage its
Temporal Schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.schedules import install_schedule, interval_schedule, next_runs
from schemas.errors import ConfigError, TransientError
from schemas.sync import Progress, RunCounts, SyncInput, SyncMode, sync_workflow_id
from workflows.sync import CONTROL_QUEUE, SyncWorkflow
from workflows.trigger import SyncTriggerWorkflow

__all__ = [
    "ScheduleInfo",
    "cancel",
    "delete_schedule",
    "handle",
    "pause",
    "progress",
    "resume",
    "retry_rejected",
    "schedule",
    "schedule_id",
    "start",
]


def schedule_id(tenant: str, sync_id: str) -> str:
    return f"sync-schedule:{tenant}:{sync_id}"


async def start(
    client: Client,
    tenant: str,
    sync_id: str,
    *,
    mode: SyncMode | None = None,
    trigger: str = "manual",
    task_queue: str = CONTROL_QUEUE,
) -> WorkflowHandle[SyncWorkflow, RunCounts]:
    """Start a run, or join the one already running (workflow id ``sync:{tenant}:{sync}``) on the
    control queue (``temporal.control_task_queue``)."""
    return await client.start_workflow(
        SyncWorkflow.run,
        SyncInput(tenant=tenant, sync_id=sync_id, mode=mode, trigger=trigger),
        id=sync_workflow_id(tenant, sync_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"sync {sync_id} of tenant {tenant}",
    )


async def retry_rejected(
    client: Client, tenant: str, sync_id: str, *, trigger: str = "manual", task_queue: str = CONTROL_QUEUE
) -> WorkflowHandle[SyncWorkflow, RunCounts]:
    """Start a run that, after its incremental pull, retries every rejected record of the sync
    (at most ``worker.retry_rejected_per_run``; the rest with the next runs), changed or not. A run
    in progress is not joined — it would not retry them all: a :class:`ConfigError` says to wait."""
    try:
        return await client.start_workflow(
            SyncWorkflow.run,
            SyncInput(tenant=tenant, sync_id=sync_id, trigger=trigger, retry_rejected=True),
            id=sync_workflow_id(tenant, sync_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"sync {sync_id} of tenant {tenant}: retry rejected records",
        )
    except WorkflowAlreadyStartedError:
        raise ConfigError(
            f"a run of sync {sync_id!r} is in progress; retry its rejected records once it has ended"
        ) from None


def handle(client: Client, tenant: str, sync_id: str) -> WorkflowHandle[SyncWorkflow, RunCounts]:
    return client.get_workflow_handle_for(SyncWorkflow.run, sync_workflow_id(tenant, sync_id))


async def progress(client: Client, tenant: str, sync_id: str) -> Progress | None:
    """The latest run's progress, or None if the sync never ran."""
    try:
        result: Progress = await handle(client, tenant, sync_id).query(SyncWorkflow.progress)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        if exc.status is RPCStatusCode.FAILED_PRECONDITION:
            # Queries are answered by workers: none polls the control queue right now.
            raise TransientError(
                "no crmhub worker is polling the control queue, so the run cannot be asked for its "
                "progress; start one with: crmhub worker --region <region>"
            ) from None
        if exc.status in (
            RPCStatusCode.CANCELLED,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.UNAVAILABLE,
        ):
            # The worker holding the run died or Temporal restarts: the query timed out; ask again.
            raise TransientError(
                f"the run did not answer the progress query ({exc.message}); its worker may have "
                "stopped or Temporal may be restarting — try again shortly"
            ) from None
        raise
    return result


async def pause(client: Client, tenant: str, sync_id: str) -> None:
    await handle(client, tenant, sync_id).signal(SyncWorkflow.pause)


async def resume(client: Client, tenant: str, sync_id: str) -> None:
    await handle(client, tenant, sync_id).signal(SyncWorkflow.resume)


async def cancel(client: Client, tenant: str, sync_id: str) -> None:
    """Request cancellation: the run discards its staged batches and records itself cancelled."""
    await handle(client, tenant, sync_id).cancel()


@dataclass(frozen=True)
class ScheduleInfo:
    id: str
    every: timedelta
    paused: bool
    next_runs: tuple[str, ...]


async def schedule(
    client: Client,
    tenant: str,
    sync_id: str,
    *,
    every: timedelta | None = None,
    paused: bool | None = None,
    trigger_now: bool = False,
    task_queue: str = CONTROL_QUEUE,
) -> ScheduleInfo:
    """Create or update the sync's Temporal Schedule (incremental runs every ``every``; overlapping
    triggers are skipped), pause/unpause it, or trigger a run now."""
    sid = schedule_id(tenant, sync_id)
    h: ScheduleHandle = client.get_schedule_handle(sid)
    if every is not None:
        if every < timedelta(minutes=1):
            raise ConfigError("schedule interval must be at least 1 minute (e.g. --every 15m)")
        # The schedule starts a trigger workflow, which starts the sync under its fixed id (a
        # schedule would otherwise suffix the id with a timestamp, allowing two runs side by side).
        action = ScheduleActionStartWorkflow(
            SyncTriggerWorkflow.run,
            SyncInput(tenant=tenant, sync_id=sync_id, trigger="schedule"),
            id=f"sync-trigger:{tenant}:{sync_id}",
            task_queue=task_queue,
        )
        sched = interval_schedule(action, every, note="crmhub sync schedule", paused=bool(paused))
        h = await install_schedule(client, sid, sched)
    else:
        try:
            await h.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise ConfigError(
                    f"sync {sync_id!r} of tenant {tenant!r} has no schedule; create one with --every 1h"
                ) from None
            raise
    if paused is True:
        await h.pause(note="paused by crmhub")
    elif paused is False:
        await h.unpause(note="unpaused by crmhub")
    if trigger_now:
        await h.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    desc = await h.describe()
    spec_every = desc.schedule.spec.intervals[0].every if desc.schedule.spec.intervals else timedelta(0)
    return ScheduleInfo(
        sid,
        spec_every,
        desc.schedule.state.paused,
        next_runs(desc),
    )


async def delete_schedule(client: Client, tenant: str, sync_id: str) -> None:
    await client.get_schedule_handle(schedule_id(tenant, sync_id)).delete()
