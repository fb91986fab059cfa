"""The sealed staging format between pull and push, dead-letter ids and messages, heartbeat resume.

A staged part is a vault ``seal_batch`` of compact JSON ``{"v": 1, "keys": [kh_…], "records": […]}``
(``keys[i]`` is the keyed hash of ``records[i]``'s source id) with AAD
``(tenant, sync, "<batch>/<part>", purpose)``; its deleted source ids, as keyed hashes, are sealed
the same way under ``"<batch>/<part>/deleted"`` — a JSON list, or ``{"deleted": […], "merged": {loser:
winner}}`` when the source reported merges (keyed hashes both; :func:`open_part_and_merges`). A part
moved to another batch, sync, tenant or purpose does not open.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity

from governance.policy import GovernedPage, Quarantined
from governance.vault import Vault
from schemas.connector import Record
from schemas.errors import DataError, IntegrityError
from store import dead_letters as dead_letter_store
from store import staging as staging_store
from store.syncs import mapping_hash
from workflows.context import SyncContext

__all__ = [
    "PendingPart",
    "dead_letter_id",
    "open_part",
    "open_part_and_merges",
    "redact",
    "resume",
    "seal_letter",
    "seal_part",
]

_VERSION = 1
_P = TypeVar("_P", bound=BaseModel)


@dataclass
class PendingPart:
    """Pages read but not yet staged: records with their keys, deleted keys, quarantined records,
    and what they cost."""

    keys: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    held: list[Quarantined] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)  # loser key → winner key (workflows.merges)
    pages: int = 0
    calls: int = 0
    withheld_values: int = 0
    pseudonymized: int = 0
    suppressed: int = 0  # records of suppressed data subjects the pages brought (dropped)

    def add(self, page: GovernedPage, *, calls: int) -> None:
        """Add one governed page (and the vendor calls it took)."""
        self.keys += page.keys
        self.records += page.records
        self.deleted += page.deleted
        self.held += page.quarantined
        self.pages += 1
        self.calls += calls
        self.withheld_values += page.withheld_values
        self.pseudonymized += page.pseudonymized
        self.suppressed += page.suppressed

    def __bool__(self) -> bool:
        """True when there is something to stage (records, deletes or quarantined records)."""
        return bool(self.records or self.deleted or self.held)

    @property
    def read(self) -> int:
        """Records read into this part (staged and quarantined)."""
        return len(self.records) + len(self.held)


def _json_default(value: object) -> Any:
    raise DataError(f"a field value of type {type(value).__name__} cannot be staged (JSON types only)")


def _name(batch_id: str, part: int) -> str:
    return f"{batch_id}/{part}"


def seal_part(
    vault: Vault, ctx: SyncContext, batch_id: str, part: int, pending: PendingPart
) -> tuple[bytes, bytes | None]:
    """Seal a part's records (with keys) and, if any, its deleted keys."""
    name = _name(batch_id, part)
    body = {"v": _VERSION, "keys": pending.keys, "records": pending.records}
    blob = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()
    purpose = ctx.instruction.purpose
    sealed = vault.seal_batch(ctx.tenant.id, blob, sync=ctx.spec.id, batch=name, purpose=purpose)
    sealed_deleted = None
    if pending.deleted or pending.merged:
        gone: Any = (
            {"deleted": pending.deleted, "merged": pending.merged} if pending.merged else pending.deleted
        )
        sealed_deleted = vault.seal_batch(
            ctx.tenant.id,
            json.dumps(gone, separators=(",", ":")).encode(),
            sync=ctx.spec.id,
            batch=f"{name}/deleted",
            purpose=purpose,
        )
    return sealed, sealed_deleted


def open_part(
    vault: Vault, ctx: SyncContext, part: staging_store.StagedPart
) -> tuple[list[str], list[Record], list[str]]:
    """Keys, records and deleted keys of one staged part; :class:`IntegrityError` if it does not open
    in this context or is malformed."""
    keys, records, deleted, _ = open_part_and_merges(vault, ctx, part)
    return keys, records, deleted


def open_part_and_merges(
    vault: Vault, ctx: SyncContext, part: staging_store.StagedPart
) -> tuple[list[str], list[Record], list[str], dict[str, str]]:
    """:func:`open_part` and the merges the part carries (loser key hash → winner key hash; empty:
    none), each sealed blob opened once."""
    name = _name(part.batch_id, part.part)
    purpose = ctx.instruction.purpose
    blob = vault.open_batch(ctx.tenant.id, part.sealed, sync=ctx.spec.id, batch=name, purpose=purpose)
    body = json.loads(blob)
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise IntegrityError("staged part has an unknown format version")
    keys, records = body["keys"], body["records"]
    if len(keys) != len(records):
        raise IntegrityError("staged part is inconsistent (keys and records differ in number)")
    deleted, merged = _open_deleted(vault, ctx, part)
    return keys, records, deleted, merged


def _open_deleted(
    vault: Vault, ctx: SyncContext, part: staging_store.StagedPart
) -> tuple[list[str], dict[str, str]]:
    if part.deleted_keys is None:
        return [], {}
    name = _name(part.batch_id, part.part)
    raw = vault.open_batch(
        ctx.tenant.id,
        part.deleted_keys,
        sync=ctx.spec.id,
        batch=f"{name}/deleted",
        purpose=ctx.instruction.purpose,
    )
    body = json.loads(raw)
    if isinstance(body, list):
        return [str(k) for k in body], {}
    if not isinstance(body, dict) or not isinstance(body.get("merged"), dict):
        raise IntegrityError("staged deletes have an unknown format")
    return [str(k) for k in body["deleted"]], {str(k): str(v) for k, v in body["merged"].items()}


def seal_letter(
    vault: Vault,
    ctx: SyncContext,
    run_id: str,
    where: tuple[str, int, str, int],
    key: str,
    body: dict[str, Any],
    *,
    code: str,
    message: str,
    created: datetime,
) -> dead_letter_store.DeadLetter:
    """The dead letter of one record, ``where`` = (batch, part, kind, index in the part): ``body``
    (the record and what was said about it) sealed like staging, ``code`` and ``message`` (names and
    codes, never values) in clear, under a deterministic id (:func:`dead_letter_id`), with the
    instruction version and mapping hash it was refused under."""
    tenant, sync_id = ctx.tenant.id, ctx.spec.id
    batch_id, part, kind, index = where
    letter_id = dead_letter_id(tenant, sync_id, batch_id, part, kind, index)
    sealed = vault.seal(
        tenant,
        json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode(),
        dataset="dead-letter",
        object_id=letter_id,
        purpose=ctx.instruction.purpose,
    )
    return dead_letter_store.DeadLetter(
        id=letter_id, tenant=tenant, sync_id=sync_id, run_id=run_id, batch_id=batch_id,
        record_key_hash=key, sealed_record=sealed, error_code=code, error_message=message, created=created,
        instruction_version=ctx.instruction.version, mapping_hash=mapping_hash(ctx.spec),
    )  # fmt: skip


def dead_letter_id(tenant: str, sync_id: str, batch_id: str, part: int, kind: str, index: int) -> str:
    """Deterministic id of the dead letter of record ``index`` of a part, so a retried push records
    each failure once."""
    raw = f"{tenant}\x1f{sync_id}\x1f{batch_id}\x1f{part}\x1f{kind}\x1f{index}".encode()
    return hashlib.sha256(raw).hexdigest()[:40]


def redact(message: str | None, record: Record) -> str:
    """A vendor message with every value of ``record`` cut out (vendors quote the bad value), and any
    remaining e-mail-like word too; at most 300 characters."""
    if not message:
        return ""
    out = " ".join(message.split())[:300]
    for value in record.values():
        text = str(value) if value is not None else ""
        if len(text) >= 3 and text in out:
            out = out.replace(text, "[redacted]")
    if "@" in out:  # normalised forms of a value (case, whitespace) escape the literal replacement
        out = " ".join("[redacted]" if "@" in word else word for word in out.split(" "))
    return out


def resume(model: type[_P], batch_id: str) -> _P | None:
    """The heartbeat details a previous attempt at the same batch left, if any (a real worker hands
    them over as decoded JSON; tests may pass the model)."""
    details: Sequence[Any] = activity.info().heartbeat_details
    if not details:
        return None
    try:
        progress = model.model_validate(details[0])
    except ValidationError:
        activity.logger.warning("ignoring unreadable heartbeat details; starting the batch over")
        return None
    return progress if getattr(progress, "batch_id", None) == batch_id else None
