"""What crosses Temporal for the maintenance workflows (retention purge, key-rotation check, incident
watch).

Only ids, counts and key versions: never record content, never key material. Add fields only with
defaults so recorded histories stay replayable (STYLE habit 1).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IncidentWatchInput",
    "IncidentWatchResult",
    "KeyRotationInput",
    "KeyRotationResult",
    "RetentionPurgeInput",
    "RetentionPurgeResult",
    "RotatedKey",
    "TenantPurge",
    "incident_watch_workflow_id",
    "key_rotation_workflow_id",
    "retention_purge_workflow_id",
]


def retention_purge_workflow_id() -> str:
    """Readable, stable id of the retention purge: two triggers never run it twice at once."""
    return "maintenance:retention-purge"


def key_rotation_workflow_id() -> str:
    """Readable, stable id of the key-rotation check."""
    return "maintenance:key-rotation-check"


def incident_watch_workflow_id() -> str:
    """Readable, stable id of the incident watch."""
    return "maintenance:incident-watch"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetentionPurgeInput(_Model):
    """Input of the retention purge (workflow and activity). ``run_id`` names the purge in the
    lineage events it appends; empty: the workflow fills in ``retention:<its run id>``."""

    run_id: str = Field("", max_length=256)


class TenantPurge(_Model):
    """What the purge deleted for one tenant.

    ``retention_days`` is the one of the tenant's latest instruction; ``None`` when the tenant has
    no usable instruction, in which case only staging past its own ``expires_at`` was deleted and
    ``note`` says why dead letters and id-map rows were kept.
    """

    tenant: str
    staging_parts: int = 0
    dead_letters: int = 0
    id_map_rows: int = 0
    retention_days: int | None = None
    instruction_version: int | None = None
    recorded: bool = False  # a ``delete`` lineage event was appended (only when something was deleted)
    note: str = ""

    @property
    def total(self) -> int:
        return self.staging_parts + self.dead_letters + self.id_map_rows


class RetentionPurgeResult(_Model):
    """Per-tenant counts of one purge, in tenant id order."""

    tenants: list[TenantPurge] = []

    def counts(self) -> dict[str, int]:
        """Totals over all tenants."""
        return {
            "staging_parts": sum(t.staging_parts for t in self.tenants),
            "dead_letters": sum(t.dead_letters for t in self.tenants),
            "id_map_rows": sum(t.id_map_rows for t in self.tenants),
        }


class KeyRotationInput(_Model):
    """Thresholds of the key-rotation check.

    A tenant's active data key is rotated when its reserved uses reach ``use_share`` of the vault's
    ``rotate_after`` (the vault itself rotates only at the hard limit, mid-seal), or when it is
    ``max_age_days`` old or older.
    """

    use_share: float = Field(0.8, gt=0.0, le=1.0)
    max_age_days: int = Field(90, ge=1, le=36_500)


class RotatedKey(_Model):
    """One rotation: the tenant (or pseudo-tenant), the key versions and why (``uses`` or ``age``)."""

    tenant: str
    old_version: int
    new_version: int
    reason: str
    uses_reserved: int
    age_days: int


class KeyRotationResult(_Model):
    """What one check looked at and what it rotated."""

    checked: int = 0  # active data keys examined
    rotated: list[RotatedKey] = []
    skipped: list[str] = []  # tenants whose key could not be rotated (e.g. shredded meanwhile)


class IncidentWatchInput(_Model):
    """Input of the incident watch: whether a finding (a codec token misused, a ledger failing
    verification) opens an incident (the codec thresholds are the worker's ``codec.misuse``
    settings), and whether the ledgers are verified at all."""

    open_incidents: bool = True
    check_ledgers: bool = True


class IncidentWatchResult(_Model):
    """What one watch did: ledger events (``incident`` and ``notice``) appended that an earlier
    command owed; per misused codec token id the incident opened, the one already covering it, or
    none (it decoded no tenant's payload); per tenant whose ledger fails verification the incident
    opened or the one already covering that failure. Ids and counts only."""

    appended: int = 0
    still_owed: int = 0
    opened: dict[str, str] = {}  # token id -> incident id
    covered: dict[str, str] = {}  # token id -> incident id
    no_breach: list[str] = []  # token ids
    ledger_failed: list[str] = []  # tenants whose ledger does not verify
    ledger_opened: dict[str, str] = {}  # tenant -> incident id
    ledger_covered: dict[str, str] = {}  # tenant -> incident id
