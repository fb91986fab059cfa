"""Data shapes of the connector plugin contract (DESIGN.md §3), shared by connectors and workflows.

A *stream* is one object type of a CRM (Salesforce ``Contact``, HubSpot ``contacts``). Reading is
page-bounded and resumable from a small :class:`StreamState`; writing returns one
:class:`RecordOutcome` per input record, matched to it by position and by ``external_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CheckResult",
    "FieldSpec",
    "IdPage",
    "Link",
    "LinkResult",
    "OutcomeStatus",
    "Page",
    "ReadMode",
    "Record",
    "RecordOutcome",
    "RecordsById",
    "SchemaDrift",
    "StreamSchema",
    "StreamSpec",
    "StreamState",
    "WriteMode",
    "WriteResult",
]

Record = dict[str, Any]
"""One CRM record as flat field → value (vendor field names; ``Id``/``id`` included)."""


class ReadMode(StrEnum):
    FULL = "full"  # every live record (backfill / full refresh)
    INCREMENTAL = "incremental"  # records modified after the cursor, deletes included


class WriteMode(StrEnum):
    UPSERT = "upsert"  # by external id: idempotent, a retried batch duplicates nothing
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class StreamState(BaseModel):
    """Where a read stands: small enough to live in workflow state and activity heartbeats.

    ``cursor`` + ``tie_break`` is the keyset position (last modification time seen and the id of
    the last record with that time), so records sharing one timestamp at a page boundary are
    neither skipped nor repeated. ``page_token`` is a vendor continuation (Salesforce
    nextRecordsUrl locator, HubSpot ``after``) valid only within one read session.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ReadMode = ReadMode.INCREMENTAL
    cursor: str | None = None
    tie_break: str | None = None
    page_token: str | None = None
    window_end: str | None = None
    include_deleted: bool = True
    extra: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of records and the state to read the next one from.

    ``deleted_ids`` lists records deleted at the source (seen through the recycle bin / archive).
    ``merged_into`` maps ids merged away at the source to the id of the record that absorbed them
    (a HubSpot merge, a Salesforce ``MasterRecordId``). A connector may list them in ``deleted_ids``
    too (Salesforce reports merged losers as deleted rows; HubSpot only with ``merges_as_deletes``):
    either way the winner may be the very record the loser was upserted into at the destination
    (same external id), so a workflow never deletes a destination record still mapped from a live
    source id, and lineage can say "merged".
    ``reconcile`` is set (a short reason code) when the source can no longer prove it reported every
    delete since ``next_state``'s predecessor — e.g. its delete log was purged past the cursor — so
    the caller should compare :meth:`connectors.base.Connector.list_ids` with what it holds.
    ``calls`` counts the vendor API calls this page cost (for budgets and benchmarks).
    ``owners`` (an association stream such as HubSpot ``deals/contacts``, whose records are pairs)
    lists the owner records the page read in full — each with all its pairs, or deleted: an owner
    listed with no pair on the page has none left.
    """

    records: list[Record]
    next_state: StreamState
    has_more: bool
    deleted_ids: list[str] = field(default_factory=list)
    calls: int = 1
    merged_into: dict[str, str] = field(default_factory=dict)
    reconcile: str | None = None
    owners: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IdPage:
    """One page of the ids of every live record of a stream (for delete reconciliation).

    ``next_state`` resumes the listing (``has_more=False`` at the end); ids of one listing are
    unique, in no promised order. A record created during a listing may be missing from it.
    """

    ids: list[str]
    next_state: StreamState
    has_more: bool
    calls: int = 1


@dataclass(frozen=True, slots=True)
class Link:
    """One relationship of a destination record: child ``child_id`` → parent ``parent_id`` (both
    destination record ids). ``previous_id`` is the parent it was linked to before (unlinked
    first: a re-parented child); ``parent_id`` ``None`` only unlinks (the source cleared its lookup).

    Labels (a vendor that has them: HubSpot's association labels): ``label`` names the label the
    pair ``child_id`` → ``parent_id`` is created with (made at the destination when it has none of
    that name); ``unlabel`` is the destination's id of a label to take off that pair first (as a
    :class:`LinkResult` reported it), the association staying — with no ``label`` it only unlabels."""

    child_id: str
    parent_id: str | None
    previous_id: str | None = None
    label: str | None = None
    unlabel: str | None = None


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What a :meth:`~connectors.base.Connector.write_links` call did: ``failed`` maps the index of a
    link the vendor refused to (vendor code, message without values); ``calls`` API calls;
    ``labels``: the destination's id of each label name the call wrote."""

    failed: dict[int, tuple[str, str]] = field(default_factory=dict)
    calls: int = 0
    labels: dict[str, str] = field(default_factory=dict)


class OutcomeStatus(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What happened to one input record of a write. ``error_code`` is the vendor's code."""

    index: int
    external_id: str | None
    status: OutcomeStatus
    id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not OutcomeStatus.FAILED


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcomes: list[RecordOutcome]
    calls: int = 0

    @property
    def failed(self) -> list[RecordOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {s.value: 0 for s in OutcomeStatus}
        for o in self.outcomes:
            out[o.status.value] += 1
        return out


class FieldSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str
    label: str = ""
    nullable: bool = True
    writable: bool = False
    unique: bool = False
    external_id: bool = False
    compound: str | None = Field(None, description="the compound field this one is a component of")
    is_compound: bool = False
    required: bool = Field(False, description="a create must set it (no vendor default)")


class StreamSchema(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream: str
    fields: tuple[FieldSpec, ...]

    def names(self) -> set[str]:
        return {f.name for f in self.fields}


class SchemaDrift(BaseModel):
    """Differences between the schema a sync was planned with and the live one."""

    model_config = ConfigDict(frozen=True)

    stream: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()  # (field, old type, new type)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.retyped)


class StreamSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    primary_key: str
    cursor_field: str | None = None
    writable: bool = True
    supports_deletes: bool = True
    default_external_id: str | None = None
    label: str = ""
    custom: bool = False  # a custom object (Salesforce ``__c``, a HubSpot schema's ``2-…`` object)
    aliases: tuple[
        str, ...
    ] = ()  # other names the vendor knows it by (HubSpot: objectTypeId, fullyQualifiedName)


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    ok: bool
    message: str
    api_usage: str | None = None


@dataclass(frozen=True, slots=True)
class RecordsById:
    """The answer of :meth:`connectors.base.Connector.read_by_ids`: the live records found (each
    with its id field; in no promised order), the requested ids the source no longer has (deleted,
    merged away or never there) and the vendor calls the read cost."""

    records: list[Record]
    missing: list[str]
    calls: int
