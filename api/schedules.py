"""The Temporal Schedules crmhub installs — a sync's runs (:mod:`api.syncops`) and the maintenance
workflows (:mod:`api.maintenance`) — built and installed one way: one fixed interval, overlap policy
SKIP (a slot that comes while the previous run still runs is skipped, never queued), created or,
when one of that id exists, updated in place."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from schemas.errors import ConfigError

__all__ = ["install_schedule", "interval_schedule", "next_runs", "parse_interval"]

_INTERVAL = re.compile(r"^(\d+)([smhd])$")


def parse_interval(text: str) -> timedelta:
    """``15m``, ``1h``, ``1d`` (also ``30s``) as a timedelta; :class:`ConfigError` for anything else."""
    m = _INTERVAL.match(text.strip())
    if not m:
        raise ConfigError(f"interval {text!r} must look like 15m, 1h or 1d")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def interval_schedule(
    action: ScheduleActionStartWorkflow, every: timedelta, *, note: str, paused: bool = False
) -> Schedule:
    """A schedule that starts ``action`` every ``every``, skipping a slot while a run still runs."""
    return Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note=note),
    )


async def install_schedule(
    client: Client, schedule_id: str, schedule: Schedule, *, keep_state: bool = False
) -> ScheduleHandle:
    """Create the schedule, or replace the one with that id; ``keep_state`` keeps the existing
    one's paused flag and note (ops may have paused it) instead of ``schedule``'s."""

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        if not keep_state:
            return ScheduleUpdate(schedule=schedule)
        now = current.description.schedule.state
        state = dataclasses.replace(schedule.state, paused=now.paused, note=now.note or schedule.state.note)
        return ScheduleUpdate(schedule=dataclasses.replace(schedule, state=state))

    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)
        await handle.update(update)
        return handle


def next_runs(description: ScheduleDescription, count: int = 3) -> tuple[str, ...]:
    """The next ``count`` times the schedule fires, ISO-8601."""
    return tuple(t.isoformat() for t in description.info.next_action_times[:count])
