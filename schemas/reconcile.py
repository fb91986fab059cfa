"""What crosses Temporal for a delete reconciliation (:mod:`workflows.reconcile`): ids of the sync and
the run, counts and the listing's resume state — never a record id (the listed ids live as keyed
hashes in the store). Add fields only with defaults (STYLE habit 1).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.connector import StreamState

__all__ = [
    "ApplyInput",
    "ListInput",
    "ListResult",
    "ReconcileInput",
    "ReconcileOutcome",
    "ReconcilePlan",
    "ReconcileProgress",
    "ReconcileResult",
    "reconcile_workflow_id",
]


def reconcile_workflow_id(tenant: str, sync_id: str) -> str:
    """Readable, stable: two triggers of one sync's reconciliation meet the same workflow."""
    return f"reconcile:{tenant}:{sync_id}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReconcileOutcome(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # the vanished records were deleted at the destination (or none vanished)
    DRY_RUN = "dry_run"  # counted, nothing deleted
    INCOMPLETE = "incomplete"  # the listing ended early or failed: nothing deleted
    REFUSED = "refused"  # more than the allowed fraction would be deleted without --force: nothing deleted
    UNSUPPORTED = "unsupported"  # the source connector cannot list ids
    FAILED = "failed"


class ReconcileInput(_Model):
    tenant: str
    sync_id: str
    dry_run: bool = False
    force: bool = False  # delete even above ``max_delete_fraction``
    trigger: str = "manual"  # manual | schedule | sync (a pull reported Page.reconcile)
    reason: str | None = None  # the source's reason code when a run triggered it


class ReconcilePlan(_Model):
    """One reconciliation: where it runs, and the moment T its listing began (only id-map entries
    written before T are judged: a record created during the listing may be missing from it)."""

    tenant: str
    sync_id: str
    run_id: str
    task_queue: str
    started_at: datetime
    source: str
    source_stream: str
    destination: str
    destination_stream: str
    dry_run: bool = False
    force: bool = False
    trigger: str = "manual"
    reason: str | None = None
    max_delete_fraction: float = 0.5
    page_size: int = 2000
    pages_per_activity: int = 25
    activity_time_budget_s: float = 60.0
    heartbeat_timeout_s: float = 60.0
    list_attempts: int = 5


class ListInput(_Model):
    plan: ReconcilePlan
    state: StreamState
    seq: int = 0


class ListResult(_Model):
    """Where one listing activity stopped: resume from ``next_state`` while ``has_more``."""

    next_state: StreamState
    has_more: bool
    listed: int = 0  # ids listed by this activity
    pages: int = 0
    calls: int = 0
    supported: bool = True  # False: the source connector cannot list ids (Connector.lists_ids)


class ApplyInput(_Model):
    plan: ReconcilePlan
    complete: bool  # the listing reached its end
    why_incomplete: str = ""
    unsupported: bool = False
    list_pages: int = 0
    list_calls: int = 0


class ReconcileResult(_Model):
    outcome: ReconcileOutcome
    listed: int = 0  # distinct live ids at the source
    mapped: int = 0  # id-map entries written before the listing began
    vanished: int = 0  # of those, keys the listing lacks
    deleted: int = 0  # destination records deleted
    kept: int = 0  # vanished keys whose destination record another live key maps: mapping dropped only
    failed: int = 0  # destination refused the delete (mapping kept: the next reconciliation retries)
    list_pages: int = 0
    list_calls: int = 0
    delete_batches: int = 0
    delete_calls: int = 0
    message: str = ""


class ReconcileProgress(_Model):
    """Answer of the ``progress`` query of a reconciliation (also its current details)."""

    tenant: str
    sync_id: str
    run_id: str | None = None
    phase: str = "planning"  # planning | listing | deleting | done
    listed: int = 0
    list_pages: int = 0
    list_calls: int = 0
    result: ReconcileResult | None = None
    dry_run: bool = False
    reason: str | None = Field(None, description="why it runs: a source reason code or the trigger")
