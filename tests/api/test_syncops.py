"""Sync operations through Temporal: one run per sync however often it is triggered, and the sync's
Schedule (create, pause, unpause, trigger now, delete)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from api import syncops
from schemas.errors import ConfigError
from schemas.sync import sync_workflow_id
from workflows.trigger import SyncTriggerWorkflow

pytestmark = pytest.mark.integration


@pytest.fixture
def client(temporal_env) -> Client:
    return Client(
        temporal_env.client.service_client,
        namespace=temporal_env.client.namespace,
        data_converter=pydantic_data_converter,
    )


async def test_two_triggers_meet_one_run(client: Client) -> None:
    queue, sync_id = f"control-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    first = await syncops.start(client, "acme", sync_id, task_queue=queue)
    second = await syncops.start(client, "acme", sync_id, task_queue=queue)
    assert first.id == second.id == sync_workflow_id("acme", sync_id)
    assert first.result_run_id == second.result_run_id
    await first.terminate("test done")


async def test_schedule_lifecycle(client: Client) -> None:
    queue, sync_id = f"control-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    info = await syncops.schedule(client, "acme", sync_id, every=timedelta(hours=1), task_queue=queue)
    try:
        assert info.id == syncops.schedule_id("acme", sync_id)
        assert info.every == timedelta(hours=1)
        assert not info.paused
        assert info.next_runs
        desc = await client.get_schedule_handle(info.id).describe()
        assert desc.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "SyncTriggerWorkflow"

        updated = await syncops.schedule(
            client, "acme", sync_id, every=timedelta(minutes=15), task_queue=queue
        )
        assert updated.every == timedelta(minutes=15)  # re-running updates in place
        assert (await syncops.schedule(client, "acme", sync_id, paused=True)).paused
        assert not (await syncops.schedule(client, "acme", sync_id, paused=False)).paused

        # A manual run is in progress: a scheduled trigger joins it instead of starting a second run.
        manual = await syncops.start(client, "acme", sync_id, task_queue=queue)
        async with Worker(client, task_queue=queue, workflows=[SyncTriggerWorkflow]):
            await syncops.schedule(client, "acme", sync_id, trigger_now=True)
            trigger = await _first_trigger_run(client, sync_id)
            assert await trigger.result() == "already running"
            await manual.terminate("test done")
            # With no run in progress, the trigger starts the sync under its fixed id.
            await syncops.schedule(client, "acme", sync_id, trigger_now=True)
            started = await _first_trigger_run(client, sync_id, skip_run=trigger.run_id)
            assert await started.result() == "started"
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{sync_workflow_id('acme', sync_id)}'")]
        assert len(runs) == 2  # the manual run and the one the schedule started; never two at once
        await client.get_workflow_handle(sync_workflow_id("acme", sync_id)).terminate("test done")
    finally:
        await syncops.delete_schedule(client, "acme", sync_id)
    with pytest.raises(ConfigError, match="no schedule"):
        await syncops.schedule(client, "acme", sync_id, paused=True)


async def _first_trigger_run(
    client: Client, sync_id: str, skip_run: str | None = None
) -> WorkflowHandle[Any, Any]:
    """The trigger workflow the schedule started (its id gets a timestamp suffix from Temporal)."""
    prefix = f"sync-trigger:acme:{sync_id}"
    for _ in range(200):
        async for w in client.list_workflows("WorkflowType = 'SyncTriggerWorkflow'"):
            if w.id.startswith(prefix) and w.run_id != skip_run:
                return client.get_workflow_handle(w.id, run_id=w.run_id)
        await asyncio.sleep(0.1)
    raise AssertionError("the schedule started no trigger workflow")


async def test_schedule_interval_below_a_minute_is_refused(client: Client) -> None:
    with pytest.raises(ConfigError, match="at least 1 minute"):
        await syncops.schedule(client, "acme", "s", every=timedelta(seconds=10))
