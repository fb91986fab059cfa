"""Records that leave the source without an ordinary delete (issue 13): merges, and sources that can
no longer prove they reported every delete. Called by the pull (:func:`fold_page`) and the push
(:func:`spare_shared`, :func:`merge_event`); the reconciliation (:mod:`workflows.reconcile_activities`)
uses the same guard.

**The merge guard.** A merge at the source (HubSpot: a new record with a new id absorbs both;
Salesforce: losers deleted with ``MasterRecordId`` = the winner) reports the losers as deleted and
names their winner (``Page.merged_into``). The winner usually keeps a loser's natural key, so upserted
by that key it lands on the *loser's* destination record, and the push applies a part's upserts
before its deletes: the loser's mapped destination id is then also the winner's. A delete therefore
never removes a destination record still mapped from a source key that is not itself leaving — its
mapping is dropped and the record kept (``kept``). Otherwise the loser's destination record is
deleted and the winner's stays: crmhub does not merge records at the destination (neither
destination's merge API is used; a **guess** that deleting the loser and upserting the winner is what
a controller expects — the winner carries the merged values, so nothing is lost).

Lineage: one ``merge`` event per pushed batch that carried merges — counts ``merged`` (losers),
``deleted`` (their destination records deleted), ``kept`` (re-pointed to the winner's record), the
losers' keyed hashes as ``record_id_hashes`` and the winners' in ``details["winners"]`` (same order).
The deletes are in the batch's ``delete`` event too.

**A loser whose winner the destination refused** (issue 13): deleting the loser's destination record
then would leave the destination with neither — the merged person gone until the winner's dead
letter is fixed. So the loser's delete is held instead: a dead letter (code :data:`HELD`, its
destination id and its winner's keyed hash sealed), the mapping kept, counted ``held`` in the merge
event and as a failed delete. When a later push has the winner accepted, :func:`releasable` finds
the held losers and the push deletes them (through the same merge guard: a winner upserted into the
loser's record keeps it), resolving their letters, linked to the run that held them. Any dead
letter of the winner holds the loser, a quarantined one too (the winner is not at the destination
as the source has it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from governance.vault import Vault
from schemas.connector import Page
from schemas.errors import IntegrityError
from schemas.lineage import EventKind, LineageEvent
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import reconcile as reconcile_store
from store.engine import Connection
from workflows.context import ActivityKit, BatchEvents, SyncContext
from workflows.staging import PendingPart

__all__ = [
    "HELD",
    "HOLD_MESSAGE",
    "Target",
    "fold_page",
    "hold_for_winners",
    "merge_event",
    "releasable",
    "spare_shared",
]

HELD = "MERGE_WINNER_REFUSED"
"""Dead-letter code of a merge loser's delete held while its winner is not at the destination."""
HOLD_MESSAGE = "held until the record it was merged into reaches the destination"
RELEASE_SCAN = 1000
"""Held letters a push part looks at, oldest first (more wait for a later part)."""

Target = tuple[int, str, str]
"""(position in the part's deletes, source key hash, destination id) of one delete to propagate."""


def fold_page(kit: ActivityKit, ctx: SyncContext, pending: PendingPart, page: Page) -> str | None:
    """Add a page's merges (as keyed hashes) to ``pending`` — its deletes came with the governed page
    (:class:`governance.policy.PageProcessor`); persist the page's ``reconcile`` request on the sync
    at once (the next run's pages no longer report it) and return it.

    Only ids the connector lists in ``deleted_ids`` are deleted at the destination (HubSpot lists
    merged-away ids there with ``merges_as_deletes``, on by default); every merge is recorded."""
    tenant = ctx.tenant.id
    keyed_hash = kit.deps.pseudonymizer.keyed_hash
    pending.merged.update(
        {keyed_hash(tenant, str(lo)): keyed_hash(tenant, str(wi)) for lo, wi in page.merged_into.items()}
    )
    if page.reconcile:
        with kit.deps.engine.begin() as conn:
            reconcile_store.request_reconcile(conn, tenant, ctx.spec.id, page.reconcile, now=kit.deps.clock())
    return page.reconcile


def spare_shared(
    conn: Connection, tenant: str, sync_id: str, targets: Sequence[Target], *, leaving: Sequence[str]
) -> tuple[list[Target], list[Target]]:
    """Split ``targets`` into those to delete at the destination and those to keep because another
    source key — one not in ``leaving`` (the keys deleted together) — still maps their destination id.
    Two leaving keys that share one destination record delete it once."""
    shared = id_map_store.shared_destinations(
        conn, tenant, sync_id, [d for _, _, d in targets], besides=leaving
    )
    delete: list[Target] = []
    keep: list[Target] = []
    seen: set[str] = set()
    for target in targets:
        dest = target[2]
        if dest in shared or dest in seen:
            keep.append(target)
        else:
            seen.add(dest)
            delete.append(target)
    return delete, keep


def hold_for_winners(
    conn: Connection, tenant: str, sync_id: str, targets: Sequence[Target], merges: Mapping[str, str]
) -> tuple[list[Target], list[tuple[Target, str]]]:
    """Split ``targets`` into those to delete now and the merge losers to hold, each with its winner's
    key: those whose winner has a dead letter in the sync (see the module docstring)."""
    winners = {merges[k] for _, k, _ in targets if k in merges}
    refused = dead_letter_store.held_key_hashes(conn, tenant, sync_id, sorted(winners)) if winners else set()
    now: list[Target] = []
    held: list[tuple[Target, str]] = []
    for target in targets:
        winner = merges.get(target[1])
        if winner is not None and winner in refused:
            held.append((target, winner))
        else:
            now.append(target)
    return now, held


def releasable(
    conn: Connection, vault: Vault, ctx: SyncContext, accepted: Sequence[str]
) -> list[tuple[str, str]]:
    """``(loser key, destination id)`` of the held merge losers whose winner is among ``accepted``
    (the keys the destination just took). A letter that no longer opens under the instruction's
    purpose stays held (and listed with the sync's dead letters)."""
    if not accepted:
        return []
    tenant, sync_id = ctx.tenant.id, ctx.spec.id
    letters = dead_letter_store.list_dead_letters(conn, tenant, sync_id, code=HELD, limit=RELEASE_SCAN)
    took = set(accepted)
    out: list[tuple[str, str]] = []
    for letter in letters:
        try:
            sealed = vault.open(
                tenant, letter.sealed_record, dataset="dead-letter", object_id=letter.id,
                purpose=ctx.instruction.purpose,
            )  # fmt: skip
        except IntegrityError:
            continue
        body = json.loads(sealed)
        record = body.get("record") or {}
        if record.get("merged_into") in took and record.get("destination_id"):
            out.append((letter.record_key_hash, str(record["destination_id"])))
    return out


def merge_event(
    ev: BatchEvents,
    ctx: SyncContext,
    merged: Mapping[str, str],
    *,
    deleted: Sequence[str],
    kept: Sequence[str],
    held: Sequence[str] = (),
) -> list[LineageEvent]:
    """The batch's ``merge`` event (none without merges): see the module docstring."""
    if not merged:
        return []
    losers = sorted(merged)
    gone, spared, waiting = set(deleted), set(kept), set(held)
    counts = {
        "merged": len(losers),
        "deleted": sum(1 for k in losers if k in gone),
        "kept": sum(1 for k in losers if k in spared),
        "held": sum(1 for k in losers if k in waiting),
    }
    winners = ",".join(merged[k] for k in losers)
    return [ev(EventKind.MERGE, ctx.outbound(ctx.source_dataset()), counts, losers, winners=winners)]
