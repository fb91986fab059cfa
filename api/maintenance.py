"""crmhub's maintenance Temporal Schedules: the retention purge and the key-rotation check.

``install_maintenance_schedules`` creates both, or updates them in place when they exist (a changed
interval in settings takes effect on the next install), on the control queue with overlap policy
SKIP: a slot that comes while the previous run still runs is skipped, never queued. The workflows
are :mod:`workflows.maintenance`; every crmhub worker polls the control queue, so any one runs them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from schemas.maintenance import (
    KeyRotationInput,
    RetentionPurgeInput,
    key_rotation_workflow_id,
    retention_purge_workflow_id,
)
from schemas.settings import Settings
from workflows.maintenance import KeyRotationCheckWorkflow, RetentionPurgeWorkflow

__all__ = [
    "KEY_ROTATION_SCHEDULE_ID",
    "MAINTENANCE_SCHEDULE_IDS",
    "RETENTION_SCHEDULE_ID",
    "MaintenanceSchedule",
    "describe_maintenance_schedules",
    "install_maintenance_schedules",
]

RETENTION_SCHEDULE_ID = "crmhub-retention-purge"
KEY_ROTATION_SCHEDULE_ID = "crmhub-key-rotation-check"
MAINTENANCE_SCHEDULE_IDS = (RETENTION_SCHEDULE_ID, KEY_ROTATION_SCHEDULE_ID)


@dataclass(frozen=True)
class MaintenanceSchedule:
    """What ops see of one maintenance schedule; ``installed`` False means it does not exist (the other
    fields are then empty)."""

    id: str
    installed: bool
    every: timedelta | None = None
    overlap: str = ""
    paused: bool = False
    workflow: str = ""
    task_queue: str = ""
    next_runs: tuple[str, ...] = ()
    recent_runs: int = 0


def _schedules(settings: Settings) -> dict[str, Schedule]:
    queue = settings.temporal.control_task_queue
    every = settings.schedules
    policy = SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)
    return {
        RETENTION_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                RetentionPurgeWorkflow.run,
                RetentionPurgeInput(),
                id=retention_purge_workflow_id(),
                task_queue=queue,
                static_summary="crmhub retention purge: staging, dead letters, id map past retention",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every.retention_purge_interval)]),
            policy=policy,
            state=ScheduleState(note="crmhub maintenance: retention purge"),
        ),
        KEY_ROTATION_SCHEDULE_ID: Schedule(
            action=ScheduleActionStartWorkflow(
                KeyRotationCheckWorkflow.run,
                KeyRotationInput(),
                id=key_rotation_workflow_id(),
                task_queue=queue,
                static_summary="crmhub key-rotation check: tenant and codec data keys",
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every.key_rotation_check_interval)]),
            policy=policy,
            state=ScheduleState(note="crmhub maintenance: key-rotation check"),
        ),
    }


async def install_maintenance_schedules(client: Client, settings: Settings) -> list[MaintenanceSchedule]:
    """Create both maintenance schedules, or update them to the intervals in ``settings`` (a paused
    schedule stays paused); returns them as described afterwards."""
    for sid, sched in _schedules(settings).items():
        try:
            await client.create_schedule(sid, sched)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(sid).update(functools.partial(_keep_paused, sched))
    return await describe_maintenance_schedules(client)


def _keep_paused(wanted: Schedule, current: ScheduleUpdateInput) -> ScheduleUpdate:
    """The wanted schedule, keeping the current paused state and note (ops may have paused it)."""
    now = current.description.schedule.state
    state = dataclasses.replace(wanted.state, paused=now.paused, note=now.note or wanted.state.note)
    return ScheduleUpdate(schedule=dataclasses.replace(wanted, state=state))


async def describe_maintenance_schedules(client: Client) -> list[MaintenanceSchedule]:
    """Both maintenance schedules as Temporal has them now (read directly, not from visibility)."""
    out: list[MaintenanceSchedule] = []
    for sid in MAINTENANCE_SCHEDULE_IDS:
        try:
            desc = await client.get_schedule_handle(sid).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                out.append(MaintenanceSchedule(sid, installed=False))
                continue
            raise
        sched = desc.schedule
        action = sched.action
        intervals = sched.spec.intervals
        overlap = sched.policy.overlap
        out.append(
            MaintenanceSchedule(
                sid,
                installed=True,
                every=intervals[0].every if intervals else None,
                overlap=overlap.name if overlap is not None else "",
                paused=sched.state.paused,
                workflow=action.workflow if isinstance(action, ScheduleActionStartWorkflow) else "",
                task_queue=action.task_queue if isinstance(action, ScheduleActionStartWorkflow) else "",
                next_runs=tuple(t.isoformat() for t in desc.info.next_action_times[:3]),
                recent_runs=len(desc.info.recent_actions),
            )
        )
    return out
