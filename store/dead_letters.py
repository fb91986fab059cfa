"""Dead letters and the quarantine: records crmhub holds back, sealed (table ``dead_letters``,
migration ``0006_syncs``).

A dead letter is a record the destination refused: its vault ciphertext, the keyed hash of its key
(``kh_…``), the vendor's error code and a message without PII. The same table is the *quarantine*:
records a pull held back because a value no longer fit its planned type (error code
:data:`QUARANTINED`, the reason names field and types) — so retention, erasure and export cover them
like every other held record. A sync holds one letter per refused record, its latest refusal.
A letter ends when the destination accepts its record (a later run after a fix at the source):
:func:`resolve_dead_letters` deletes it and the push lineage names the refusal's run.
Each letter records the instruction version and the sync's mapping hash
(:func:`store.syncs.mapping_hash`) it was refused under (migration ``0022_dead_letter_retry``;
NULL on letters written before it: unknown). :func:`retry_candidates` picks the letters a change of
either affects — an unknown counts as changed, so an old letter is retried once and its next letter,
if refused again, records the versions — and :func:`mark_retried` stamps the current versions on
letters a retry could not settle, so a change retries each letter once (workflows/retry.py).
Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Select,
    String,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from store._sql import as_bytes, chunks, required_aware, table_of

__all__ = [
    "QUARANTINED",
    "DeadLetter",
    "DeadLetterTable",
    "add_dead_letters",
    "count_dead_letters",
    "count_quarantined",
    "dead_letter_key_hashes",
    "dead_letters",
    "held_key_hashes",
    "list_dead_letters",
    "list_quarantined",
    "mark_retried",
    "purge_dead_letters",
    "resolve_dead_letters",
    "retry_candidates",
]

QUARANTINED = "QUARANTINED_TYPE_MISMATCH"
"""Dead-letter error code of a quarantined record (held back at the pull, never pushed)."""

_CODE, _MESSAGE = 128, 500  # characters of the error code and message (the columns' lengths)


class DeadLetterTable(SQLModel, table=True):
    """Declaration of the ``dead_letters`` table (read and written through :data:`dead_letters`)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_dead_letters"),
        Index("ix_dead_letters_sync", "tenant", "sync_id", "run_id"),
    )

    id: str = Field(sa_type=String(64), primary_key=True)
    tenant: str = Field(sa_type=String(128))
    sync_id: str = Field(sa_type=String(128))
    run_id: str = Field(sa_type=String(128))
    batch_id: str = Field(sa_type=String(200))
    record_key_hash: str = Field(sa_type=String(64))
    sealed_record: bytes = Field(sa_type=LargeBinary)
    error_code: str = Field(sa_type=String(_CODE))
    error_message: str = Field(sa_type=String(_MESSAGE))
    created: datetime = Field(sa_type=DateTime(timezone=True))
    # 0022_dead_letter_retry: what the record was refused under (NULL: before 0022, unknown).
    instruction_version: int | None = Field(default=None, sa_type=Integer)
    mapping_hash: str | None = Field(default=None, sa_type=String(64))


dead_letters = table_of(DeadLetterTable)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the destination refused. ``id`` is deterministic (batch, part, position), so a retried
    push records the same failure once."""

    id: str
    tenant: str
    sync_id: str
    run_id: str
    batch_id: str
    record_key_hash: str
    sealed_record: bytes
    error_code: str
    error_message: str
    created: datetime
    instruction_version: int | None = None  # the instruction version the record was refused under
    mapping_hash: str | None = None  # the sync's mapping hash then (store.syncs.mapping_hash)


def add_dead_letters(conn: Connection, letters: Sequence[DeadLetter]) -> int:
    """Insert dead letters whose id is not stored yet; returns how many were new.

    A record refused again under a new id (a later run or batch of the same sync) replaces its
    earlier letter: a sync holds one letter per refused record, its latest refusal — so re-running
    a sync over the same bad records does not multiply them."""
    if not letters:
        return 0
    existing: set[str] = set()
    for chunk in chunks([d.id for d in letters]):
        existing.update(conn.execute(select(dead_letters.c.id).where(dead_letters.c.id.in_(chunk))).scalars())
    new = [d for d in letters if d.id not in existing]
    by_sync: dict[tuple[str, str], list[str]] = {}
    for d in new:
        by_sync.setdefault((d.tenant, d.sync_id), []).append(d.record_key_hash)
    for (tenant, sync_id), keys in by_sync.items():
        for chunk in chunks(keys):
            conn.execute(
                dead_letters.delete().where(
                    dead_letters.c.tenant == tenant,
                    dead_letters.c.sync_id == sync_id,
                    dead_letters.c.record_key_hash.in_(chunk),
                )
            )
    if new:
        conn.execute(
            dead_letters.insert(),
            [
                {**asdict(d), "error_code": d.error_code[:_CODE], "error_message": d.error_message[:_MESSAGE]}
                for d in new
            ],
        )
    return len(new)


def list_dead_letters(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    run_id: str | None = None,
    limit: int = 1000,
    code: str | None = None,
    batch_id: str | None = None,
) -> list[DeadLetter]:
    """Dead letters of a sync (of one run or staged batch, with one error code), oldest first."""
    stmt = select(dead_letters).where(dead_letters.c.tenant == tenant, dead_letters.c.sync_id == sync_id)
    if run_id is not None:
        stmt = stmt.where(dead_letters.c.run_id == run_id)
    if batch_id is not None:
        stmt = stmt.where(dead_letters.c.batch_id == batch_id)
    if code is not None:
        stmt = stmt.where(dead_letters.c.error_code == code)
    return _letters(conn, stmt.order_by(dead_letters.c.created, dead_letters.c.id).limit(limit))


def _letters(conn: Connection, stmt: Select[Any]) -> list[DeadLetter]:
    out = []
    for m in conn.execute(stmt).mappings():
        sealed = as_bytes(m["sealed_record"])
        assert sealed is not None
        values = {k: m[k] for k in DeadLetter.__dataclass_fields__}
        out.append(DeadLetter(**{**values, "sealed_record": sealed, "created": required_aware(m["created"])}))
    return out


RETRYABLE_PREFIX = "upsert refused:"
"""How the message of a letter of a refused upsert begins (workflows.push): only those are retried
(quarantined records, refused deletes and links settle their own way)."""


def retry_candidates(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    instruction_version: int,
    mapping_hash: str,
    everything: bool = False,
    limit: int,
) -> list[DeadLetter]:
    """At most ``limit`` letters of refused upserts to retry, oldest first: those refused under
    another instruction version or mapping hash than the given ones (or unknown: NULL), or, with
    ``everything`` (an on-demand retry), every one."""
    stmt = select(dead_letters).where(
        dead_letters.c.tenant == tenant,
        dead_letters.c.sync_id == sync_id,
        dead_letters.c.error_code != QUARANTINED,
        dead_letters.c.error_message.startswith(RETRYABLE_PREFIX, autoescape=True),
    )
    if not everything:
        stmt = stmt.where(
            or_(
                dead_letters.c.instruction_version.is_(None),
                dead_letters.c.mapping_hash.is_(None),
                dead_letters.c.instruction_version != instruction_version,
                dead_letters.c.mapping_hash != mapping_hash,
            )
        )
    return _letters(conn, stmt.order_by(dead_letters.c.created, dead_letters.c.id).limit(max(0, limit)))


def mark_retried(
    conn: Connection, tenant: str, ids: Sequence[str], *, instruction_version: int, mapping_hash: str
) -> int:
    """Stamp the current versions on letters a retry tried but could not settle (their record was
    skipped or could not be re-read): the next run retries them only after another change."""
    done = 0
    for chunk in chunks(list(ids)):
        stmt = (
            update(dead_letters)
            .where(dead_letters.c.tenant == tenant, dead_letters.c.id.in_(chunk))
            .values(instruction_version=instruction_version, mapping_hash=mapping_hash)
        )
        done += int(conn.execute(stmt).rowcount)
    return done


def list_quarantined(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
    limit: int = 1000,
) -> list[DeadLetter]:
    """Quarantined records of a sync (of one run / staged batch), oldest first: sealed, with the
    reason in clear."""
    return list_dead_letters(
        conn, tenant, sync_id, run_id=run_id, batch_id=batch_id, limit=limit, code=QUARANTINED
    )


def count_quarantined(conn: Connection, tenant: str, sync_id: str, *, run_id: str | None = None) -> int:
    return count_dead_letters(conn, tenant, sync_id, run_id=run_id, code=QUARANTINED)


def dead_letter_key_hashes(conn: Connection, tenant: str, sync_id: str, batch_id: str) -> set[str]:
    """Keyed hashes of the records of one staged batch that were dead-lettered."""
    stmt = select(dead_letters.c.record_key_hash).where(
        dead_letters.c.tenant == tenant,
        dead_letters.c.sync_id == sync_id,
        dead_letters.c.batch_id == batch_id,
    )
    return {str(h) for h in conn.execute(stmt).scalars()}


def count_dead_letters(
    conn: Connection, tenant: str, sync_id: str, *, run_id: str | None = None, code: str | None = None
) -> int:
    stmt = (
        select(func.count())
        .select_from(dead_letters)
        .where(dead_letters.c.tenant == tenant, dead_letters.c.sync_id == sync_id)
    )
    if run_id is not None:
        stmt = stmt.where(dead_letters.c.run_id == run_id)
    if code is not None:
        stmt = stmt.where(dead_letters.c.error_code == code)
    return int(conn.execute(stmt).scalar_one())


def purge_dead_letters(conn: Connection, tenant: str, *, before: datetime) -> int:
    """Delete the tenant's dead letters created before ``before`` (their retention ended); returns
    how many."""
    stmt = delete(dead_letters).where(dead_letters.c.tenant == tenant, dead_letters.c.created < before)
    return int(conn.execute(stmt).rowcount)


def resolve_dead_letters(
    conn: Connection, tenant: str, sync_id: str, key_hashes: Sequence[str]
) -> list[tuple[str, str]]:
    """The destination accepted these records at last: delete their dead letters (the quarantine's
    excepted) and return ``(letter id, run id of the refusal)`` of each, for the lineage that links
    the success to the original refusal."""
    found: list[tuple[str, str]] = []
    for chunk in chunks(list(dict.fromkeys(key_hashes))):
        where = (
            dead_letters.c.tenant == tenant,
            dead_letters.c.sync_id == sync_id,
            dead_letters.c.record_key_hash.in_(chunk),
            dead_letters.c.error_code != QUARANTINED,
        )
        rows = conn.execute(select(dead_letters.c.id, dead_letters.c.run_id).where(*where)).all()
        if rows:
            found += [(str(r[0]), str(r[1])) for r in rows]
            conn.execute(delete(dead_letters).where(*where))
    return found


def held_key_hashes(conn: Connection, tenant: str, sync_id: str, key_hashes: Sequence[str]) -> set[str]:
    """Those of ``key_hashes`` whose record has a dead letter in the sync (refused or quarantined:
    not at the destination as the source has it)."""
    found: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(key_hashes))):
        stmt = select(dead_letters.c.record_key_hash).where(
            dead_letters.c.tenant == tenant,
            dead_letters.c.sync_id == sync_id,
            dead_letters.c.record_key_hash.in_(chunk),
        )
        found.update(str(h) for h in conn.execute(stmt).scalars())
    return found
