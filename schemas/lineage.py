"""Lineage models: the events the ledger records, signed checkpoints, proofs and the audit report.

A :class:`LineageEvent` describes one step of a run over a *batch* of records (pull, transform,
store, push, delete, erase, export, transfer, refusal, quarantine, drift, merge, revoke, restrict,
rectify, notice, incident) or a step of a subprocessor-registry change (registry). It never holds
raw record ids or PII: the caller passes keyed hashes of record ids (hex HMAC digests made with the
tenant's key), which the model checks are hex strings of a digest's length.

:meth:`LineageEvent.canonical_bytes` is the leaf input of the Merkle tree: sorted-key compact JSON,
UTF-8, timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, so the same event always hashes the
same way on any machine. :meth:`LineageEvent.from_canonical` reads it back.

Hashes in checkpoints, proofs and reports are standard base64 (as in C2SP signed checkpoints and
the RFC 9162 test vectors).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CANONICAL_SCHEMA",
    "REPORT_FORMAT",
    "REPORT_FORMAT_V1",
    "Checkpoint",
    "ConsistencyProof",
    "DatasetRef",
    "EventKind",
    "InclusionProof",
    "LedgerReport",
    "LineageEvent",
    "ReportEntry",
    "TransferMechanism",
    "VerificationResult",
    "format_timestamp",
]

CANONICAL_SCHEMA: Final = "crmhub.lineage.event/1"
"""Written into every canonical event so a later format change cannot be confused with this one."""

REPORT_FORMAT: Final = "crmhub.lineage.report/2"
"""Reports crmhub writes: format 1 plus RFC 9162 consistency proofs between the checkpoints."""
REPORT_FORMAT_V1: Final = "crmhub.lineage.report/1"
"""The first report format (no consistency proofs); still read and verified."""

_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
# Keyed digests, hex; the pseudonymizer writes them with a "kh_" tag (governance.pseudonym.keyed_hash).
_HEX_DIGEST = re.compile(r"(?:kh_)?[0-9a-f]{32,128}")
# Detail values are restricted to types whose JSON form is identical everywhere (no floats).
DetailValue = str | int | bool | None


class EventKind(StrEnum):
    """What happened to the batch."""

    PULL = "pull"
    TRANSFORM = "transform"
    STORE = "store"
    PUSH = "push"
    DELETE = "delete"
    ERASE = "erase"
    EXPORT = "export"
    TRANSFER = "transfer"
    REFUSAL = "refusal"
    QUARANTINE = "quarantine"  # records held back: a value no longer fits the type the run planned
    DRIFT = "drift"  # the source schema changed during a run (once per change and run)
    MERGE = "merge"  # records merged at the source (loser → winner): losers' destination records deleted
    REVOKE = "revoke"  # a connection's OAuth grant ended at the vendor (offboarding), or why not
    # The subprocessor registry (Art. 28(2)): a change noticed, objected to, applied or not applied
    # to the tenant, and the version a run was planned under (details["step"], details["version"]).
    REGISTRY = "registry"
    RESTRICT = "restrict"  # a data subject's restriction (Art. 18) or objection (Art. 21): suppressed
    RECTIFY = "rectify"  # a data subject's corrected values pushed to the destinations (Art. 16)
    NOTICE = "notice"  # a notice to the controller: enqueued, then each delivery attempt's outcome
    INCIDENT = "incident"  # a personal-data breach: when crmhub became aware, scope, when notified


class TransferMechanism(StrEnum):
    """The legal basis recorded for moving data between regions (``none``: same region)."""

    NONE = "none"
    ADEQUACY = "adequacy"
    SCC = "scc"


def format_timestamp(value: datetime) -> str:
    """UTC, microseconds, ``Z`` suffix: the only timestamp form in canonical bytes."""
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def _keyed_hashes(values: tuple[str, ...]) -> tuple[str, ...]:
    match = _HEX_DIGEST.fullmatch
    for value in values:
        if match(value) is None:
            # The value itself is not echoed: it might be the raw id we are refusing to record.
            raise ValueError(
                "record_id_hashes must be lowercase hex keyed digests (32-128 hex chars), never raw ids"
            )
    return values


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _now() -> datetime:
    return datetime.now(UTC)


class DatasetRef(BaseModel):
    """A dataset in OpenLineage terms: ``namespace`` (system/instance) and ``name`` (object)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1, max_length=512)
    name: str = Field(min_length=1, max_length=512)


class LineageEvent(BaseModel):
    """One ledger entry: a step of a run over a batch of records, identified only by keyed hashes."""

    # Validation errors end up in logs: never echo the offending input (it may be a raw id).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    kind: EventKind
    tenant: str = Field(min_length=1, max_length=128)
    run_id: str = Field(min_length=1, max_length=256)
    sync_id: str | None = None
    instruction_version: int | None = Field(default=None, ge=0)
    instruction_hash: str | None = None
    purpose: str | None = None
    source: DatasetRef | None = None
    destination: DatasetRef | None = None
    counts: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    record_id_hashes: Annotated[tuple[str, ...], AfterValidator(_keyed_hashes)] = ()
    subprocessor: str | None = None
    region_from: str | None = None
    region_to: str | None = None
    transfer_mechanism: TransferMechanism | None = None
    timestamp: UtcDatetime = Field(default_factory=_now)
    details: dict[str, DetailValue] = Field(default_factory=dict)

    def canonical_dict(self) -> dict[str, Any]:
        """The JSON object whose canonical serialization is the Merkle leaf input."""
        data = self.model_dump(mode="python")
        data["kind"] = self.kind.value
        data["timestamp"] = format_timestamp(self.timestamp)
        data["record_id_hashes"] = list(self.record_id_hashes)
        data["transfer_mechanism"] = (
            None if self.transfer_mechanism is None else self.transfer_mechanism.value
        )
        data["schema"] = CANONICAL_SCHEMA
        return data

    def canonical_bytes(self) -> bytes:
        """Deterministic bytes: sorted keys, no whitespace, UTF-8, fixed UTC timestamp format."""
        return json.dumps(
            self.canonical_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_canonical(cls, data: bytes | str) -> LineageEvent:
        """Parse canonical bytes back into an event (raises ``ValueError`` on a foreign schema)."""
        obj = json.loads(data)
        if not isinstance(obj, dict) or obj.pop("schema", None) != CANONICAL_SCHEMA:
            raise ValueError(f"not a {CANONICAL_SCHEMA} event")
        return cls.model_validate(obj)


def _b64_hash(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ValueError("hash must be standard base64") from exc
    if len(raw) != 32:
        raise ValueError("hash must be 32 bytes (SHA-256)")
    return value


B64Hash = Annotated[str, AfterValidator(_b64_hash)]


class Checkpoint(BaseModel):
    """A signed statement "the ledger ``origin`` had ``size`` entries with Merkle root ``root_hash``".

    The signature is Ed25519 over :meth:`signed_body`, a C2SP tlog-checkpoint style note body
    (origin, size, base64 root, one per line) with a ``time`` extension line.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: str = Field(min_length=1)
    size: int = Field(ge=0)
    root_hash: B64Hash
    timestamp: UtcDatetime
    key_id: str
    signature: str

    @field_validator("origin")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value:
            raise ValueError("origin must be one line")
        return value

    @property
    def root(self) -> bytes:
        return base64.b64decode(self.root_hash)

    @staticmethod
    def body(origin: str, size: int, root: bytes, timestamp: datetime) -> bytes:
        """The exact bytes a checkpoint signature covers."""
        root_b64 = base64.b64encode(root).decode("ascii")
        return f"{origin}\n{size}\n{root_b64}\ntime {format_timestamp(timestamp)}\n".encode()

    def signed_body(self) -> bytes:
        return self.body(self.origin, self.size, self.root, self.timestamp)


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof of the leaf at ``index`` in the tree of ``size`` leaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    size: int = Field(ge=1)
    leaf_hash: B64Hash
    hashes: tuple[B64Hash, ...]


class ConsistencyProof(BaseModel):
    """RFC 9162 consistency proof: the tree of ``size1`` leaves is a prefix of the one of ``size2``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size1: int = Field(ge=1)
    size2: int = Field(ge=1)
    hashes: tuple[B64Hash, ...]


class ReportEntry(BaseModel):
    """One exported ledger entry: its index, the leaf hash the ledger stored, the canonical event.

    ``event`` is the canonical JSON text itself (not a re-serialized object), so the verifier
    hashes exactly the bytes that were appended.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    leaf_hash: str
    event: str


class LedgerReport(BaseModel):
    """What an auditor receives: one tenant's entries ``0..size-1`` and the signed checkpoints.

    ``checkpoints`` holds every checkpoint the ledger signed up to the report's size (oldest
    first; from the database and the signer's checkpoint journal); the last one covers all
    entries. Format 2 adds ``consistency``: for each pair of consecutive checkpoints (the older
    of size ≥ 1) the RFC 9162 proof that the older tree is a prefix of the newer. ``public_key``
    is informational: verify with a key obtained independently.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["crmhub.lineage.report/1", "crmhub.lineage.report/2"] = REPORT_FORMAT
    tenant: str
    origin: str
    public_key: str | None = None
    checkpoints: tuple[Checkpoint, ...] = ()
    consistency: tuple[ConsistencyProof, ...] = ()
    entries: tuple[ReportEntry, ...] = ()


class VerificationResult(BaseModel):
    """Outcome of an offline verification.

    ``ok`` is true only when the signature is valid and the entries reproduce the signed root.
    ``first_bad_index`` is the first entry that was altered, deleted, inserted or moved, when the
    evidence localizes it; otherwise ``bad_window`` bounds it ``[start, end)`` between signed
    checkpoints.
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: str
    size: int
    root_hash: str | None = None
    signature_ok: bool = False
    first_bad_index: int | None = None
    bad_window: tuple[int, int] | None = None
    checkpoints_verified: int = 0
    unverified_tail: int = 0
