"""What crosses Temporal for a sync: small references only — ids, counts, cursors, BatchRefs.

Records never cross: they live sealed in the store (staging) between pull and push. Every model
here is an activity or workflow input/output; add fields only with defaults so recorded histories
stay replayable (STYLE habit 1).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.connector import StreamState

__all__ = [
    "BatchRef",
    "FinishInput",
    "PlanInput",
    "Progress",
    "PullInput",
    "PushInput",
    "PushResult",
    "RetryInput",
    "RetryResult",
    "RunCounts",
    "SyncCarry",
    "SyncInput",
    "SyncMode",
    "SyncPhase",
    "SyncPlanRef",
    "SyncStatus",
    "SyncWriteMode",
    "sync_workflow_id",
    "write_mode_refusal",
]


def sync_workflow_id(tenant: str, sync_id: str) -> str:
    """Readable, stable workflow id: two triggers of one sync meet the same workflow."""
    return f"sync:{tenant}:{sync_id}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyncMode(StrEnum):
    FULL = "full"  # backfill: every live record
    INCREMENTAL = "incremental"  # changes since the sync's stored cursor, deletes included


class SyncWriteMode(StrEnum):
    """How a sync writes its destination (chosen per sync; every ``push`` lineage event names it).

    Records a mode refuses to write are *skipped* — counted and named in lineage with a reason, not
    dead-lettered. Only ``mirror`` and ``archive`` carry source deletes to the destination; the
    other modes keep destination records whose source vanished (counted as ``kept_by_mode``).
    """

    UPSERT = "upsert"  # create or update by the destination id property (the default)
    UPDATE_ONLY = "update-only"  # update records this sync wrote before (its id map); never create
    CREATE_ONLY = "create-only"  # create records this sync has not written; never update
    MIRROR = "mirror"  # upsert, and delete at the destination what vanished at the source
    ARCHIVE = "archive"  # upsert, and archive (never hard-delete) what vanished at the source

    @property
    def propagates_deletes(self) -> bool:
        return self in (SyncWriteMode.MIRROR, SyncWriteMode.ARCHIVE)


def write_mode_refusal(mode: SyncWriteMode, destination_provider: str) -> str | None:
    """Why a destination cannot honour ``mode`` (for a config error naming ``write_mode``), or None.

    HubSpot's delete *is* an archive (``batch/archive``: the record is archived, not erased, and
    can be restored — guess: for 90 days, not verified here), so ``archive`` deletes through it.
    Salesforce has no archive: its delete moves a record to the Recycle Bin — that is ``mirror``, so
    ``archive`` is refused there rather than pretending."""
    if mode is SyncWriteMode.ARCHIVE and destination_provider != "hubspot":
        return (
            f"write_mode 'archive' needs a destination that archives (HubSpot); {destination_provider} "
            "has no archive (its delete is a Recycle Bin delete): choose 'mirror' to delete there, or "
            "'upsert' to keep destination records whose source vanished"
        )
    return None


JUNCTION_SEPARATOR = "/"


def is_junction(stream: str) -> bool:
    """Is a stream an association stream (``deals/contacts``: a sync whose rows are associations
    between two parents' records, see :mod:`workflows.junctions` and :mod:`workflows.pair_records`)?"""
    owner, _, other = stream.partition(JUNCTION_SEPARATOR)
    return bool(owner and other)


def relationship_mode_refusal(mode: SyncWriteMode, *streams: str) -> str | None:
    """Why a sync carrying only relationships (an association stream such as ``deals/contacts`` among
    its ``streams``, on either side) cannot run in ``mode``, or None. Its writes are links — created
    when a pair appears, removed when it goes (an association, or a Salesforce junction record such
    as OpportunityContactRole) — so ``update-only`` (never create) and ``create-only`` (never remove)
    would leave it unable to follow the source; they are refused rather than half-honoured."""
    stream = next((s for s in streams if is_junction(s)), None)
    if stream is not None and mode in (SyncWriteMode.UPDATE_ONLY, SyncWriteMode.CREATE_ONLY):
        return (
            f"write_mode '{mode.value}' does not apply to {stream}: a relationship sync creates a link "
            "when a pair appears at the source and removes it when the pair goes; choose 'upsert' "
            "(the default) or 'mirror'"
        )
    return None


class SyncStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    WAITING = "waiting"  # e.g. no worker of the tenant's region picked the task up
    COMPLETED = "completed"
    FAILED = "failed"
    REFUSED = "refused"  # the plan broke the processing instruction or the transfer rules
    CANCELLED = "cancelled"


class SyncPhase(StrEnum):
    PLANNING = "planning"
    PULLING = "pulling"
    PUSHING = "pushing"
    FINISHING = "finishing"
    DONE = "done"


class RunCounts(_Model):
    pulled: int = 0
    pushed: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0  # dead-lettered at the destination
    skipped: int = 0  # refused by the sync's write mode (update-only of an unknown record, ...)
    quarantined: int = 0  # held back at the pull: a value no longer fits the type planned for its field
    deleted: int = 0  # deletes seen at the source
    withheld_fields: int = 0  # field values dropped by the instruction's allowlist
    pseudonymized: int = 0
    batches: int = 0
    pages: int = 0
    source_calls: int = 0
    destination_calls: int = 0
    retried: int = 0  # dead letters retried: re-read at the source and pushed again (workflows.retry)
    retry_resolved: int = 0  # of those, resolved: accepted at last, or gone at the source
    retry_gone: int = 0  # of those resolved, gone at the source meanwhile

    def plus(self, **more: int) -> RunCounts:
        data = self.model_dump()
        for key, value in more.items():
            data[key] += value
        return RunCounts(**data)


class SyncInput(_Model):
    tenant: str
    sync_id: str
    mode: SyncMode | None = None  # None: incremental if the sync has a cursor, else full
    trigger: str = "manual"  # manual | schedule | api
    carry: SyncCarry | None = None  # set by continue-as-new only
    # On demand (``crmhub sync retry-rejected``): retry every rejected record, changed or not.
    retry_rejected: bool = False


class SyncCarry(_Model):
    """State carried across continue-as-new within one run."""

    run_id: str
    plan: SyncPlanRef
    state: StreamState
    counts: RunCounts
    batch_seq: int
    paused: bool = False
    drift: tuple[str, ...] = ()  # source schema changes the run has seen so far
    reconcile: str | None = None  # a pull's Page.reconcile: a reconciliation follows the run


class PlanInput(_Model):
    tenant: str
    sync_id: str
    run_id: str
    mode: SyncMode | None = None


class SyncPlanRef(_Model):
    """The checked plan of one run: where and under which instruction it processes data."""

    tenant: str
    sync_id: str
    run_id: str
    mode: SyncMode
    region: str
    task_queue: str  # the tenant's region queue: every data-touching activity runs there
    source: str  # connector name, e.g. salesforce
    source_stream: str
    destination: str
    destination_stream: str
    purpose: str
    instruction_version: int
    instruction_hash: str
    start_state: StreamState
    withheld_fields: tuple[str, ...] = ()
    # The contract of the run: (field, type) of every field it reads, from the source's describe at
    # plan time. A value that no longer fits its type is quarantined (empty: no check, older plans).
    source_types: tuple[tuple[str, str], ...] = ()
    # Worker tuning, from settings.worker at plan time (the workflow cannot read settings itself).
    pages_per_activity: int = 25
    records_per_batch: int = 10_000
    activity_time_budget_s: float = 60.0
    continue_as_new_after_batches: int = 200
    region_wait_s: float = 60.0  # how long a region-queue activity waits for a worker before saying so
    retry_rejected_per_run: int = 0  # dead letters a run retries at most (settings.worker; 0: none)
    heartbeat_timeout_s: float = 60.0  # a worker silent this long is presumed dead: the activity retries


class PullInput(_Model):
    plan: SyncPlanRef
    state: StreamState
    batch_seq: int
    max_pages: int = Field(25, ge=1)
    max_records: int = Field(10_000, ge=1)
    time_budget_s: float = Field(60.0, gt=0)


class BatchRef(_Model):
    """A sealed, staged batch: the only trace of pulled records that Temporal sees."""

    batch_id: str
    seq: int
    records: int  # records staged for push (after projection); quarantined ones are not staged
    quarantined: int = 0  # records pulled but held back (sealed in quarantine), not pushed
    drift: tuple[str, ...] = ()  # schema changes first seen by this pull, e.g. "retyped X: double → string"
    deleted: int = 0
    pages: int = 0
    calls: int = 0
    withheld_fields: int = 0
    pseudonymized: int = 0
    next_state: StreamState
    has_more: bool
    # The source could no longer prove it reported every delete (``Page.reconcile``; persisted on the
    # sync by the pull): the run starts a reconciliation when it completes.
    reconcile: str | None = None


class PushInput(_Model):
    plan: SyncPlanRef
    batch: BatchRef


class PushResult(_Model):
    batch_id: str
    pushed: int  # records the destination accepted
    created: int = 0
    updated: int = 0
    failed: int = 0  # dead-lettered with the vendor error
    calls: int = 0
    skipped: int = 0  # refused by the sync's write mode, with a reason in the push event


class RetryInput(_Model):
    """Retry at most ``limit`` dead letters of the run's sync: those a change of mapping or
    instruction affects, or, with ``everything``, every rejected record (on demand)."""

    plan: SyncPlanRef
    limit: int = Field(ge=0)
    everything: bool = False


class RetryResult(_Model):
    """What a retry of dead letters did (counted into the run's :class:`RunCounts`)."""

    retried: int = 0  # letters taken up
    pushed: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0  # refused again: a new letter under the current versions
    skipped: int = 0  # refused by the write mode
    resolved: int = 0  # letters resolved: accepted at last, or gone at the source
    gone: int = 0  # the source no longer has the record: its letter resolved as gone
    source_calls: int = 0
    destination_calls: int = 0


class FinishInput(_Model):
    plan: SyncPlanRef
    final_state: StreamState
    counts: RunCounts
    status: SyncStatus
    started_at: datetime | None = None
    message: str = ""


class Progress(_Model):
    """Answer of the ``progress`` query; also mirrored in the workflow's current details."""

    tenant: str
    sync_id: str
    run_id: str | None
    status: SyncStatus
    phase: SyncPhase
    counts: RunCounts
    cursor: str | None = None
    region: str | None = None
    waiting_reason: str | None = None
    message: str = ""
    drift: tuple[str, ...] = ()  # schema changes of the source seen during the run, each once


SyncInput.model_rebuild()
SyncCarry.model_rebuild()
