"""crmhub's maintenance Temporal Schedules: the retention purge, the key-rotation check, the
notice dispatch and the incident watch (owed incident ledger events, codec-token misuse).

``install_maintenance_schedules`` creates them, or updates them in place when they exist (a changed
interval in settings takes effect on the next install), on the control queue with overlap policy
SKIP: a slot that comes while the previous run still runs is skipped, never queued. The workflows
are :mod:`workflows.maintenance` and :class:`workflows.notices.NoticeDispatchWorkflow`; every
crmhub worker polls the control queue, so any one runs them.

Controller notices must not wait for an ops step: ``crmhub worker`` and ``crmhub demo`` install the
notice-dispatch schedule themselves when they start (:func:`install_notice_dispatch_schedule`;
a paused one stays paused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from api.schedules import install_schedule, interval_schedule, next_runs
from schemas.maintenance import (
    IncidentWatchInput,
    KeyRotationInput,
    RetentionPurgeInput,
    incident_watch_workflow_id,
    key_rotation_workflow_id,
    retention_purge_workflow_id,
)
from schemas.notices import NoticeDispatchInput, notice_dispatch_workflow_id
from schemas.settings import Settings
from workflows.maintenance import IncidentWatchWorkflow, KeyRotationCheckWorkflow, RetentionPurgeWorkflow
from workflows.notices import NoticeDispatchWorkflow

__all__ = [
    "INCIDENT_WATCH_SCHEDULE_ID",
    "KEY_ROTATION_SCHEDULE_ID",
    "MAINTENANCE_SCHEDULE_IDS",
    "NOTICE_DISPATCH_SCHEDULE_ID",
    "RETENTION_SCHEDULE_ID",
    "MaintenanceSchedule",
    "describe_maintenance_schedules",
    "install_maintenance_schedules",
    "install_notice_dispatch_schedule",
    "start_notice_dispatch",
]

log = logging.getLogger("crmhub.maintenance")

RETENTION_SCHEDULE_ID = "crmhub-retention-purge"
KEY_ROTATION_SCHEDULE_ID = "crmhub-key-rotation-check"
NOTICE_DISPATCH_SCHEDULE_ID = "crmhub-notice-dispatch"
INCIDENT_WATCH_SCHEDULE_ID = "crmhub-incident-watch"
MAINTENANCE_SCHEDULE_IDS = (
    RETENTION_SCHEDULE_ID, KEY_ROTATION_SCHEDULE_ID, NOTICE_DISPATCH_SCHEDULE_ID, INCIDENT_WATCH_SCHEDULE_ID,
)  # fmt: skip
# A dispatch pass that cannot finish in this time (no worker polls its queue) gives way to the next slot.
_DISPATCH_TIMEOUT = timedelta(minutes=10)


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


def _maintenance(
    workflow: Any, arg: Any, workflow_id: str, queue: str, every: timedelta, name: str, covers: str,
    timeout: timedelta | None = None,
) -> Schedule:  # fmt: skip
    """The schedule of one maintenance workflow; its runs show ``name`` and what it ``covers`` in the UI."""
    action = ScheduleActionStartWorkflow(
        workflow, arg, id=workflow_id, task_queue=queue, static_summary=f"crmhub {name}: {covers}",
        execution_timeout=timeout,
    )  # fmt: skip
    return interval_schedule(action, every, note=f"crmhub maintenance: {name}")


def _schedules(settings: Settings) -> dict[str, Schedule]:
    queue, every = settings.temporal.control_task_queue, settings.schedules
    # one row a workflow: workflow, input, workflow id, queue, interval, name, what it covers
    return {
        RETENTION_SCHEDULE_ID: _maintenance(
            RetentionPurgeWorkflow.run, RetentionPurgeInput(), retention_purge_workflow_id(), queue,
            every.retention_purge_interval, "retention purge", "staging, dead letters, id map past retention",
        ),
        KEY_ROTATION_SCHEDULE_ID: _maintenance(
            KeyRotationCheckWorkflow.run, KeyRotationInput(), key_rotation_workflow_id(), queue,
            every.key_rotation_check_interval, "key-rotation check", "tenant and codec data keys",
        ),
        NOTICE_DISPATCH_SCHEDULE_ID: _maintenance(
            NoticeDispatchWorkflow.run, NoticeDispatchInput(), notice_dispatch_workflow_id(), queue,
            every.notice_dispatch_interval, "notice dispatch", "start delivery of pending controller notices",
            _DISPATCH_TIMEOUT,
        ),
        INCIDENT_WATCH_SCHEDULE_ID: _maintenance(
            IncidentWatchWorkflow.run, IncidentWatchInput(), incident_watch_workflow_id(), queue,
            every.incident_watch_interval, "incident watch",
            "append owed incident and notice ledger events, verify the ledgers, check codec tokens",
        ),
    }  # fmt: skip


async def install_maintenance_schedules(client: Client, settings: Settings) -> list[MaintenanceSchedule]:
    """Create the maintenance schedules, or update them to the intervals in ``settings`` (a paused
    schedule stays paused); returns them as described afterwards."""
    for sid, sched in _schedules(settings).items():
        await install_schedule(client, sid, sched, keep_state=True)
    return await describe_maintenance_schedules(client)


async def install_notice_dispatch_schedule(client: Client, settings: Settings) -> ScheduleHandle:
    """Create or update the notice-dispatch schedule alone (a paused one stays paused): what a
    worker or the demo does at start so that notices are delivered with no ops step."""
    sched = _schedules(settings)[NOTICE_DISPATCH_SCHEDULE_ID]
    return await install_schedule(client, NOTICE_DISPATCH_SCHEDULE_ID, sched, keep_state=True)


async def start_notice_dispatch(settings: Settings) -> str:
    """Install the notice-dispatch schedule for ``settings`` over a short connection of its own; a line
    saying so, or, when Temporal refuses (say, a namespace without schedule rights), why and the fix
    (the worker still starts: it runs deliveries started by ``crmhub schedules install``'s schedule)."""
    from workers.client import connect

    connected = await connect(settings)
    try:
        await install_notice_dispatch_schedule(connected.client, settings)
    except RPCError as exc:
        line = (
            f"notice dispatch schedule not installed ({exc.status.name}); "
            "install it: crmhub schedules install"
        )
        log.warning(line)
        return line
    finally:
        connected.engine.dispose()
    every = settings.schedules.notice_dispatch_interval
    line = f"notice dispatch schedule {NOTICE_DISPATCH_SCHEDULE_ID}: every {every}"
    log.info(line)
    return line


async def describe_maintenance_schedules(client: Client) -> list[MaintenanceSchedule]:
    """The maintenance schedules as Temporal has them now (read directly, not from visibility)."""
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
                next_runs=next_runs(desc),
                recent_runs=len(desc.info.recent_actions),
            )
        )
    return out
