"""``crmhub worker --region R``: one process serving the shared control queue (workflows and
metadata-only activities) and region R's queue (every activity that touches tenant records).

A tenant's records are only ever processed by workers of the tenant's region: the workflow
schedules pull/push on that region's queue and never elsewhere. Scaling out = starting more
worker processes; nothing here holds global state.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.worker import Worker

from schemas.settings import Settings
from services.wiring import deps_from_settings
from workers.client import connect, make_runtime
from workers.logfilter import install_log_redaction
from workflows.activities import SyncActivities
from workflows.dsr import DataSubjectRequestWorkflow
from workflows.dsr_activities import DsrActivities
from workflows.maintenance import IncidentWatchWorkflow, KeyRotationCheckWorkflow, RetentionPurgeWorkflow
from workflows.maintenance_activities import MaintenanceActivities
from workflows.notice_activities import NoticeActivities
from workflows.notices import NoticeDeliveryWorkflow, NoticeDispatchWorkflow
from workflows.reconcile import ReconcileTriggerWorkflow, ReconcileWorkflow
from workflows.reconcile_activities import ReconcileActivities
from workflows.sync import SyncWorkflow
from workflows.trigger import SyncTriggerWorkflow

__all__ = ["build_workers", "run_worker"]

log = logging.getLogger("crmhub.worker")


def build_workers(client: object, settings: Settings, region: str, activities: SyncActivities,
                  executor: ThreadPoolExecutor) -> list[Worker]:  # fmt: skip
    """The two pollers of a worker process: control queue (sync and maintenance workflows,
    metadata-only activities) and the region's queue."""
    from temporalio.client import Client

    assert isinstance(client, Client)
    w = settings.worker
    maintenance = MaintenanceActivities(activities.deps)
    dsr = DsrActivities(activities.deps)
    reconcile = ReconcileActivities(activities.deps)
    control = Worker(
        client,
        task_queue=settings.temporal.control_task_queue,
        workflows=[
            SyncWorkflow,
            SyncTriggerWorkflow,
            RetentionPurgeWorkflow,
            KeyRotationCheckWorkflow,
            IncidentWatchWorkflow,
            DataSubjectRequestWorkflow,
            ReconcileWorkflow,
            ReconcileTriggerWorkflow,
            NoticeDeliveryWorkflow,
            NoticeDispatchWorkflow,
        ],
        activities=[
            activities.plan_sync,
            activities.finish_run,
            *maintenance.activities(),
            *NoticeActivities(activities.deps).activities(),
            *dsr.control_activities(),
            reconcile.begin_reconcile,
        ],
        activity_executor=executor,
        max_concurrent_activities=w.max_concurrent_activities,
        max_concurrent_workflow_tasks=w.max_concurrent_workflow_tasks,
    )
    regional = Worker(
        client,
        task_queue=settings.task_queue(region),
        activities=[activities.pull_batch, activities.push_batch, activities.retry_rejected,
                    activities.discard_batch, activities.discard_run_staging, *dsr.region_activities(),
                    reconcile.list_source_ids, reconcile.apply_reconcile],
        activity_executor=executor,
        max_concurrent_activities=w.max_concurrent_activities,
    )  # fmt: skip
    return [control, regional]


async def run_worker(settings: Settings, region: str, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM), then shut down gracefully."""
    settings.task_queue(region)  # unknown region → ConfigError naming the configured ones
    install_log_redaction()
    connected = await connect(settings, runtime=make_runtime(settings))
    deps = deps_from_settings(settings, engine=connected.engine, vault=connected.vault)
    activities = SyncActivities(deps)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(
        max_workers=settings.worker.activity_threads, thread_name_prefix="activity"
    ) as pool:
        workers = build_workers(connected.client, settings, region, activities, pool)
        log.info(
            "worker up: region %s, queues %s and %s",
            region,
            settings.temporal.control_task_queue,
            settings.task_queue(region),
        )
        try:
            async with workers[0], workers[1]:
                await stop.wait()
        finally:
            deps.close()  # the token-refresh HTTP clients: a refresh left a pooled TLS connection open
    connected.engine.dispose()
