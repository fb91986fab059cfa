"""What crosses Temporal for data-subject requests: ids, counts, destination names — never the
subject or their records. The subject travels sealed by the vault (``sealed_subject``, base64),
opened only inside the activity on the tenant's region queue; the export itself is stored sealed
in the database (``dsr_exports``) for the CLI that asked for it.

Add fields only with defaults so recorded histories stay replayable (STYLE habit 1).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DSR_PURPOSE",
    "DsrDestination",
    "DsrInput",
    "DsrKind",
    "DsrPlan",
    "DsrResult",
    "dsr_workflow_id",
]

DSR_PURPOSE = "data-subject-request"
"""The purpose the subject and the export are sealed under (AAD), apart from any sync's purpose."""


def dsr_workflow_id(tenant: str, request_id: str) -> str:
    """Readable, stable workflow id of one request."""
    return f"dsr:{tenant}:{request_id}"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DsrKind(StrEnum):
    EXPORT = "export"  # Art. 15 access / Art. 20 portability
    ERASE = "erase"  # Art. 17 erasure (and suppressed: never pulled again)
    RESTRICT = "restrict"  # Art. 18 restriction: suppressed at read time, kept out of the destinations
    OBJECT = "object"  # Art. 21 objection: as a restriction
    RECTIFY = "rectify"  # Art. 16 rectification: corrected values pushed to the destinations


class DsrInput(_Model):
    """One request: ``sealed_subject`` is ``Vault.seal`` of ``{"email": …, "ids": […]}`` (a
    rectification adds ``"corrections": {source field: value}``) (dataset
    ``dsr-subject``, object id ``request_id``, purpose :data:`DSR_PURPOSE`), base64."""

    request_id: str = Field(min_length=8, max_length=64)
    tenant: str = Field(min_length=1, max_length=128)
    kind: DsrKind
    sealed_subject: str
    propagate: bool = False  # erase/restrict/object: delete at the destinations too (WriteMode.DELETE)
    scan_sources: bool = True  # look the subject up in each sync's source to find its record ids


class DsrPlan(_Model):
    """Where the request's data-touching activity runs."""

    region: str
    task_queue: str
    syncs: list[str] = []


class DsrDestination(_Model):
    """A destination that received the subject's records, and what erasure did there."""

    sync_id: str
    connector: str
    stream: str
    connection_id: str
    records: int = 0  # destination records mapped to the subject (id map)
    deleted: int = 0  # deleted there by --propagate
    rectified: int = 0  # records updated there with the corrected values (rectify)
    failed: int = 0
    error_codes: list[str] = []


class DsrResult(_Model):
    """Counts only. ``export_ready``: the sealed export waits in ``dsr_exports`` under the request id."""

    request_id: str
    tenant: str
    kind: DsrKind
    staging_records: int = 0
    dead_letters: int = 0
    id_map_rows: int = 0
    association_links: int = 0  # relationship rows erased: links, sealed snapshots / ids / roles
    association_deferrals: int = 0  # deferral-queue rows erased (the subject's, or waiting on them)
    source_records: int = 0
    lineage_events: int = 0
    destinations: list[DsrDestination] = []
    propagated: bool = False
    export_ready: bool = False
    suppressed: int = 0  # source keys put on the suppression list (erase, restrict, object)
    ledger_index: int | None = None  # of the request's event (export, erase, restrict, rectify)
    notes: list[str] = []

    @property
    def held(self) -> int:
        """Items crmhub itself holds about the subject (staging records, dead letters, id-map rows)."""
        return self.staging_records + self.dead_letters + self.id_map_rows
