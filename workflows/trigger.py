"""``SyncTriggerWorkflow``: what a sync's Temporal Schedule starts.

A Schedule appends a timestamp to the workflow id of every run it starts, which would give a
scheduled sync run an id other than ``sync:{tenant}:{sync}`` — and so a second run beside a manual
one. The schedule therefore starts this small workflow instead; it starts the sync as a child with
the fixed id (abandoned when the trigger ends) or, if a run is already in progress, does nothing.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from schemas.sync import SyncInput, sync_workflow_id
    from workflows.sync import SyncWorkflow

__all__ = ["SyncTriggerWorkflow"]


@workflow.defn(name="SyncTriggerWorkflow")
class SyncTriggerWorkflow:
    @workflow.run
    async def run(self, inp: SyncInput) -> str:
        """Returns ``started`` or ``already running``."""
        try:
            await workflow.start_child_workflow(
                SyncWorkflow.run,
                inp,
                id=sync_workflow_id(inp.tenant, inp.sync_id),
                task_queue=workflow.info().task_queue,
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"sync {inp.sync_id} of tenant {inp.tenant} ({inp.trigger})",
            )
        except WorkflowAlreadyStartedError:
            workflow.set_current_details("a run of this sync was in progress: nothing started")
            return "already running"
        return "started"
