"""The letters of rows the *parent* sync's push releases from the deferral queue (issue 14): a child
(:mod:`workflows.associations`), a junction row (:mod:`workflows.junctions`) or a pair
(:mod:`workflows.pair_records`) refused then belongs to its own sync — kind :data:`UPSERT`, so that
sync's ``retry-rejected`` and automatic retry (:mod:`workflows.retry`) take it up — not to the
parent's, whose retry reads another stream.

A retry reads the record again by its source id, which the queue does not hold (keyed hashes only):
a row that waits keeps its source id sealed (:mod:`workflows.sealed_text`, AAD bound to the sync's
dataset and the row's key) in ``association_links`` under :data:`WAITING_ID` + the queue's field —
``{<primary key>: <id>}``, the primary key being the field of the staged record whose value hashes
to the row's key — and the release's letter holds it as its record. A row off the queue forgets it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from schemas.connector import Record
from store import associations as links_store
from store.dead_letters import DeadLetter
from store.engine import Connection
from workflows.context import ActivityKit, SyncContext
from workflows.sealed_text import open_text, seal_text
from workflows.staging import seal_letter

__all__ = ["UPSERT", "WAITING_ID", "forget", "keep", "rehomed", "waiting_ids"]

UPSERT = "upsert"
"""The kind of a refused row's letter: it stands for the record's upsert, so :mod:`workflows.retry`
takes it up like a refused upsert (``retry-rejected``, the automatic retry)."""
WAITING_ID = "@waiting-id"
"""``association_links`` field of a waiting row's sealed source id (child id column)."""
LetterFn = Callable[[str, int, str, Record, str, str | None], DeadLetter]


def _field(queue: str) -> str:
    return f"{WAITING_ID}{queue}"


def _dataset(ctx: SyncContext, queue: str) -> str:
    return f"{ctx.spec.id}{_field(queue)}"


def _source_id(kit: ActivityKit, ctx: SyncContext, key: str, record: Record) -> Record | None:
    """``{field: value}`` of the staged ``record`` whose value hashes to its ``key`` (its source id)."""
    keyed_hash, tenant = kit.deps.pseudonymizer.keyed_hash, ctx.tenant.id
    for name, value in record.items():
        if isinstance(value, str | int) and value != "" and keyed_hash(tenant, str(value)) == key:
            return {name: str(value)}
    return None


def keep(
    kit: ActivityKit, ctx: SyncContext, conn: Connection, queue: str, rows: Sequence[tuple[str, Record]]
) -> None:
    """Keep the sealed source id of each row (key, staged record) waiting in ``queue`` (the deferral
    queue's field); a row whose record is not had here or holds no id keeps what it had."""
    dataset, kept = _dataset(ctx, queue), []
    for key, record in rows:
        found = _source_id(kit, ctx, key, record) if record else None
        if found is not None:
            kept.append((key, seal_text(kit, ctx, dataset, key, json.dumps(found)), ""))
    links_store.set_links(conn, ctx.tenant.id, ctx.spec.id, _field(queue), kept, now=kit.deps.clock())


def forget(ctx: SyncContext, conn: Connection, queue: str, keys: Sequence[str]) -> None:
    """Rows off ``queue`` (linked, unlinked, dead-lettered) keep no source id."""
    links_store.drop_links(conn, ctx.tenant.id, ctx.spec.id, _field(queue), keys)


def waiting_ids(kit: ActivityKit, ctx: SyncContext, queue: str, keys: Sequence[str]) -> dict[str, Record]:
    """key → ``{primary key: source id}`` kept for those of ``keys`` waiting in ``queue``."""
    if not keys:
        return {}
    with kit.deps.engine.connect() as conn:
        rows = links_store.links_of(conn, ctx.tenant.id, ctx.spec.id, _field(queue), keys)
    dataset = _dataset(ctx, queue)
    out: dict[str, Record] = {}
    for k, (sealed, _) in rows.items():
        value = json.loads(open_text(kit, ctx, dataset, k, sealed))
        if isinstance(value, dict):
            out[k] = {str(n): v for n, v in value.items()}
    return out


def rehomed(
    kit: ActivityKit, ctx: SyncContext, letter: LetterFn, ids: dict[str, Record] | None = None
) -> LetterFn:
    """``letter`` (the parent sync's push: its run, batch and wording) writing the row's sync ``ctx``'s
    letter instead, kind :data:`UPSERT`, holding the record given or the row's kept source id
    (``ids``) so the retry reads it again."""

    def make(kind: str, index: int, key: str, record: Record, code: str, message: str | None) -> DeadLetter:
        made = letter(UPSERT, index, key, record, code, message)
        body = {"record": record or (ids or {}).get(key, {}), "vendor_message": message, "kind": UPSERT}
        return seal_letter(
            kit.deps.vault, ctx, made.run_id, (made.batch_id, 0, f"{kind}.{made.id}", index), key, body,
            code=code, message=made.error_message or f"{UPSERT} refused: {code}", created=made.created,
        )  # fmt: skip

    return make
