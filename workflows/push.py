"""``push_batch``: a staged batch → the destination, one part at a time.

Per part: open it, map each record (``mapping``; the destination id property from the source key
property), ``write_batch(UPSERT, external_id=…)`` — idempotent, so a rewritten part duplicates
nothing — then per-record outcomes: accepted → ``id_map`` (source key hash → destination id);
refused → a dead letter (sealed record and vendor message, vendor code, redacted message), so bad
records never block good ones. Staged deletes are looked up in the id map and deleted at the
destination (``DELETE``) when its stream supports it, else dead-lettered ``DELETE_NOT_SUPPORTED`` —
except a destination record another live source key still maps (the merge guard,
:mod:`workflows.merges`): its mapping is dropped, the record kept.
Each written part is heartbeated as :class:`PushProgress`; a retry skips it, and tells the
connector when the first attempt began (``Connector.retrying_since``), so records that attempt
created — their answers lost with it — are still counted created. The database, per attempt: one
read (the run's context — cached per worker —, the batch's parts and the first one to write), a read
of each further part, one write per part (its id map rows and dead letters), one lineage append, the
staging's deletion. A junction sync's parts are associations (:mod:`workflows.junctions`), a sync
from an association stream's are pairs, each one record (:mod:`workflows.pair_records`).

The move to the destination's region is checked before anything is written (fail closed). After
the last part: a ``push`` event (counts, keyed hashes of accepted records), a ``transfer`` event when
the destination region is not the processing region, a ``delete`` event for propagated deletes,
a ``merge`` event when the source reported merges; then the staged batch is deleted. After a resumed
push the ``delete`` event's counts cover every part but its hashes (and the ``merge`` event) only the
parts written by the last attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import CancelledError

from connectors.base import Connector
from schemas.connector import OutcomeStatus, Record, RecordOutcome, StreamSpec, WriteMode, WriteResult
from schemas.errors import DataError
from schemas.lineage import DetailValue, EventKind, LineageEvent
from schemas.sync import BatchRef, PushInput, PushResult, SyncWriteMode
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store import staging as staging_store
from store.associations import Deferred
from store.syncs import SyncSpec
from workflows.associations import LinkCounts, Linking, is_relationship, waiting_children
from workflows.context import ActivityKit, BatchEvents, SyncContext
from workflows.junctions import Junction, is_junction, release_all
from workflows.liveness import Keepalive
from workflows.merges import (
    HELD,
    HOLD_MESSAGE,
    Target,
    hold_for_winners,
    merge_event,
    releasable,
    spare_shared,
)
from workflows.metrics import count_push
from workflows.pair_records import PairRecords
from workflows.reverse_links import is_relink
from workflows.staging import open_part, open_part_and_merges, redact, resume, seal_letter
from workflows.write_modes import NOT_AT_DESTINATION, plan_writes, refused_as_skip

__all__ = ["WRITE_CHUNK", "PartRef", "PushProgress", "delete_staging", "destination_record", "push_batch"]

WRITE_CHUNK = 500
"""Records per ``write_batch`` call; the activity heartbeats between calls (connectors split further
into vendor batches: HubSpot 100, Salesforce Collections 200)."""


class PushProgress(BaseModel):
    """Heartbeat details of ``push_batch``: parts written and what the destination answered."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    done_parts: list[int] = []
    created: int = 0
    updated: int = 0
    failed: int = 0
    deletes_propagated: int = 0
    deletes_failed: int = 0
    deletes_unmapped: int = 0
    deletes_kept: int = 0  # mapping dropped, record kept: another live source key maps it (merge guard)
    deletes_kept_by_mode: int = 0  # not propagated: the sync's write mode keeps destination records
    skipped: dict[str, int] = {}  # reason → records the write mode refused to write
    resolved: int = 0  # dead letters of records the destination accepted at last
    resolved_runs: list[str] = []  # the runs that had refused them
    calls: int = 0
    links: LinkCounts = LinkCounts()  # relationships (workflows.associations)
    finished: bool = False  # lineage appended: a retry only deletes the staging

    def result(self) -> PushResult:
        return PushResult(
            batch_id=self.batch_id,
            pushed=self.created + self.updated,
            created=self.created,
            updated=self.updated,
            failed=self.failed,
            calls=self.calls,
            skipped=sum(self.skipped.values()),
        )


def push_batch(kit: ActivityKit, inp: PushInput) -> PushResult:
    """Push one staged batch (see the module docstring)."""
    plan, batch = inp.plan, inp.batch
    if batch.records == 0 and batch.deleted == 0:
        return PushResult(batch_id=batch.batch_id, pushed=0)
    deps = kit.deps
    progress = resume(PushProgress, batch.batch_id)
    if progress is not None and progress.finished:
        delete_staging(kit, plan.tenant, batch.batch_id)
        return progress.result()
    progress = progress or PushProgress(batch_id=batch.batch_id)
    done_before = set(progress.done_parts)
    with deps.engine.connect() as conn:  # one read: the run's context, the parts and the first to write
        ctx = kit.context(
            plan.tenant, plan.sync_id, run_id=plan.run_id, instruction_hash=plan.instruction_hash, conn=conn
        )
        parts = staging_store.staged_parts(conn, plan.tenant, batch.batch_id)
        todo = [n for n in parts if n not in done_before]
        first = staging_store.get_staged(conn, plan.tenant, batch.batch_id, part=todo[0]) if todo else []
    tenant = ctx.tenant.id
    if not parts:
        return _already_pushed(kit, ctx, plan.run_id, batch)

    # Fail closed before anything leaves: the move to the destination's region must be permitted.
    dst = ctx.destination_endpoint()
    ctx.registry.check_transfer(ctx.home, ctx.home, dst.region, dst.subprocessor, tenant=tenant)

    accepted: list[str] = []
    gone: list[str] = []
    kept: list[str] = []  # issue 13 merge guard: see workflows.merges
    held: list[str] = []  # merge losers whose winner was refused: their delete waits
    merged: dict[str, str] = {}
    connector = deps.connector_factory(ctx.spec.destination_connection_id)
    info = activity.info()
    if info.attempt > 1:  # an earlier attempt may have written records whose answers were lost
        connector.retrying_since(info.scheduled_time)
    keepalive = Keepalive.start()  # a slow vendor call must not look like a dead worker
    try:
        junction = Junction.of(kit, ctx, connector) if is_junction(ctx.spec.destination_stream) else None
        stream = junction.owner.parent_stream if junction else ctx.spec.destination_stream  # (its letters')
        spec = kit.stream_spec(connector, ctx.spec.destination_connection_id, stream)
        pairs = PairRecords.of(kit, ctx, connector) if is_junction(ctx.spec.source_stream) else None
        linking = None if junction or pairs else Linking.of(kit, ctx, connector)
        writer = _Writer(kit, ctx, plan.run_id, connector, spec, keepalive, linking)
        for number in todo:
            if activity.is_cancelled():
                raise CancelledError("push cancelled")
            if first and first[0].part == number:
                part = first.pop()
            else:
                with deps.engine.connect() as conn:
                    (part,) = staging_store.get_staged(conn, tenant, batch.batch_id, part=number)
            keys, records, deleted, merges = open_part_and_merges(deps.vault, ctx, part)
            if junction is not None:  # rows are associations (workflows.junctions), not records
                done = junction.push(keys, records, deleted, partial(writer.letter, part))
                progress, ok, deleted = progress.model_copy(update=done.progress(progress)), done.accepted, []
            elif pairs is not None:  # rows are pairs, each one record (workflows.pair_records)
                made = pairs.push(keys, records, deleted, partial(writer.letter, part))
                progress, ok, deleted = progress.model_copy(update=made.progress(progress)), made.accepted, []
            else:
                progress, ok = writer.upsert(part, keys, records, progress)
            merged.update(merges)
            accepted += ok
            progress, removed, spared = writer.release_held(part, progress)
            gone += removed
            kept += spared
            progress, removed, spared, waiting = writer.delete(part, deleted, progress, merges)
            gone += removed
            kept += spared
            held += waiting
            progress = progress.model_copy(update={"done_parts": [*progress.done_parts, number]})
            keepalive.beat(progress)
    finally:
        connector.close()
        keepalive.stop()  # last: a cancellation deferred until now is raised here
    if done_before:
        accepted = _accepted_earlier(kit, ctx, batch.batch_id, done_before) + accepted
    ev = BatchEvents(ctx.run(plan.run_id), batch.batch_id, deps.clock())
    events = _events(ev, ctx, progress, accepted, gone)
    events += merge_event(ev, ctx, merged, deleted=gone, kept=kept, held=held)
    kit.append_once(tenant, plan.run_id, batch.batch_id, events)
    count_push(
        plan,
        pushed=progress.created + progress.updated,
        failed=progress.failed + progress.deletes_failed,
        deleted=progress.deletes_propagated,
    )
    progress = progress.model_copy(update={"finished": True})
    activity.heartbeat(progress)
    delete_staging(kit, tenant, batch.batch_id)
    return progress.result()


def delete_staging(kit: ActivityKit, tenant: str, batch_id: str) -> None:
    """Delete a staged batch (harmless when it is already gone)."""
    with kit.deps.engine.begin() as conn:
        staging_store.delete_staged(conn, tenant, batch_id)


def _why(outcome: RecordOutcome) -> tuple[str, str | None]:
    return (outcome.error_code or "VENDOR_REFUSED", outcome.error_message)


def destination_record(spec: SyncSpec, rec: Record) -> Record | None:
    """``rec`` mapped to the destination's fields, keyed by its external id (the source key
    property's value); None when the record lacks that key (dead-lettered ``MISSING_EXTERNAL_ID``)."""
    key = rec.get(spec.source_key_property)
    if key is None or (isinstance(key, str) and not key.strip()):
        return None
    out = {dst: rec[src] for src, dst in spec.mapping.items() if src in rec and not is_relationship(dst)}
    out[spec.destination_id_property] = key
    return out


class PartRef(Protocol):
    """Where written records came from, for their dead letters' ids: a staged part, or the records
    a retry re-read (:mod:`workflows.retry`)."""

    @property
    def batch_id(self) -> str: ...

    @property
    def part(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _Writer:
    """Writes the parts of one batch to one destination connector."""

    kit: ActivityKit
    ctx: SyncContext
    run_id: str
    connector: Connector
    stream: StreamSpec
    keepalive: Keepalive
    linking: Linking | None = None
    to_release: list[tuple[str, str]] = field(default_factory=list)  # held losers the last upsert freed

    def upsert(
        self, part: PartRef, keys: list[str], records: list[Record], progress: PushProgress
    ) -> tuple[PushProgress, list[str]]:
        """Write one part's records as the sync's write mode says (:mod:`workflows.write_modes`);
        returns the progress and the keys the destination accepted."""
        spec = self.ctx.spec
        mapped: list[Record] = []
        positions: list[int] = []
        letters: list[dead_letter_store.DeadLetter] = []
        relinks: list[int] = []  # relationships only (an association change: workflows.reverse_links)
        for i, rec in enumerate(records):
            if is_relink(rec):
                relinks.append(i)
                continue
            out = destination_record(spec, rec)
            if out is None:
                letters.append(self.letter(part, "upsert", i, keys[i], rec, "MISSING_EXTERNAL_ID", None))
                continue
            mapped.append(out)
            positions.append(i)
        known: dict[str, str] = {}
        if spec.write_mode in (SyncWriteMode.UPDATE_ONLY, SyncWriteMode.CREATE_ONLY):
            with self.kit.deps.engine.connect() as conn:  # the id map decides: no vendor read per record
                known = id_map_store.lookup_id_map(
                    conn, self.ctx.tenant.id, spec.id, [keys[p] for p in positions]
                )
        prefilled = (
            self.linking.prefill([keys[p] for p in positions], [records[p] for p in positions], mapped)
            if self.linking
            else {}
        )
        plan = plan_writes(spec, self.stream, [keys[p] for p in positions], mapped, known)
        outcomes: dict[int, RecordOutcome] = {}
        calls = 0
        for group in plan.groups:
            for start in range(0, len(group.indexes), WRITE_CHUNK):
                if calls:  # liveness between vendor round trips (a paced vendor can take a while)
                    self.keepalive.beat(progress)
                idx = group.indexes[start : start + WRITE_CHUNK]
                chunk = [group.records[j] for j in range(start, start + len(idx))]
                answer = self.connector.write_batch(
                    spec.destination_stream, chunk, group.mode, external_id=group.external_id
                )
                self._check_outcomes(answer, len(chunk))
                outcomes.update(zip(idx, answer.outcomes, strict=True))
                calls += answer.calls
        pairs: list[tuple[str, str]] = []
        created = updated = 0
        ok: list[str] = []
        children: list[tuple[int, str, str, Record]] = []
        skipped = dict(progress.skipped)
        unmapped: list[str] = []
        for j, pos in enumerate(positions):
            reason = plan.skipped.get(j)
            outcome = outcomes.get(j)
            if reason is None and outcome is not None and not outcome.ok:
                reason = refused_as_skip(spec.write_mode, outcome.error_code)
                if reason == NOT_AT_DESTINATION:
                    unmapped.append(keys[pos])  # deleted at the destination meanwhile: forget the pair
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            assert outcome is not None
            if not outcome.ok:
                letters.append(self.letter(part, "upsert", pos, keys[pos], records[pos], *_why(outcome)))
                continue
            if outcome.status is OutcomeStatus.CREATED:
                created += 1
            else:
                updated += 1
            ok.append(keys[pos])
            if outcome.id:
                pairs.append((keys[pos], outcome.id))
                children.append((pos, keys[pos], outcome.id, records[pos]))
        with self.kit.deps.engine.begin() as conn:
            id_map_store.upsert_id_map(conn, self.ctx.tenant.id, spec.id, pairs, now=self.kit.deps.clock())
            id_map_store.delete_id_map(conn, self.ctx.tenant.id, spec.id, unmapped)
            # Accepted at last (fixed at the source since): their earlier refusals are resolved.
            resolved = dead_letter_store.resolve_dead_letters(conn, self.ctx.tenant.id, spec.id, ok)
            dead_letter_store.add_dead_letters(conn, letters)
            waiting = waiting_children(conn, self.ctx, [k for k, _ in pairs])
            if self.ctx.spec.write_mode.propagates_deletes:  # merge losers these winners free
                self.to_release[:] = releasable(conn, self.kit.deps.vault, self.ctx, ok)
            at_destination = (
                id_map_store.lookup_id_map(conn, self.ctx.tenant.id, spec.id, [keys[i] for i in relinks])
                if relinks
                else {}
            )
        children += [
            (i, keys[i], at_destination[keys[i]], records[i]) for i in relinks if keys[i] in at_destination
        ]
        links = self._links(part, children, waiting, dict(pairs), prefilled)
        progress = progress.model_copy(
            update={
                "created": progress.created + created,
                "updated": progress.updated + updated,
                "failed": progress.failed + len(letters),
                "calls": progress.calls + calls + links.calls,
                "links": progress.links.plus(links),
                "skipped": skipped,
                "resolved": progress.resolved + len(resolved),
                "resolved_runs": sorted({*progress.resolved_runs, *(run for _, run in resolved)}),
            }
        )
        return progress, ok

    def _links(
        self,
        part: PartRef,
        children: list[tuple[int, str, str, Record]],
        waiting: list[Deferred],
        landed: dict[str, str],
        prefilled: dict[str, dict[str, str | None]],
    ) -> LinkCounts:
        """This part's relationships: its children linked to their parents, and the children that
        waited for the parents it landed released (:mod:`workflows.associations`)."""

        def letter(
            kind: str, index: int, key: str, record: Record, code: str, message: str | None
        ) -> dead_letter_store.DeadLetter:
            return self.letter(part, kind, index, key, record, code, message)

        links = self.linking.link(children, letter, prefilled) if self.linking and children else LinkCounts()
        if waiting:
            links = links.plus(release_all(self.kit, self.ctx, self.connector, waiting, landed, letter))
        return links

    def delete(
        self,
        part: staging_store.StagedPart,
        deleted: list[str],
        progress: PushProgress,
        merges: Mapping[str, str] | None = None,
    ) -> tuple[PushProgress, list[str], list[str], list[str]]:
        """Propagate one part's source deletes through the id map; returns progress, deleted keys,
        the keys whose mapping was dropped while their destination record stays (merge guard) and
        the merge losers held because their winner was refused (:mod:`workflows.merges`)."""
        if not deleted:
            return progress, [], [], []
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        if not self.ctx.spec.write_mode.propagates_deletes:  # upsert / update-only / create-only keep them
            with self.kit.deps.engine.connect() as conn:
                mapped = id_map_store.lookup_id_map(conn, tenant, sync_id, deleted)
            kept_by_mode = progress.deletes_kept_by_mode + len(mapped)
            unmapped = progress.deletes_unmapped + len(deleted) - len(mapped)
            return (
                progress.model_copy(
                    update={"deletes_kept_by_mode": kept_by_mode, "deletes_unmapped": unmapped}
                ),
                [],
                [],
                [],
            )
        with self.kit.deps.engine.connect() as conn:
            found = id_map_store.lookup_id_map(conn, tenant, sync_id, deleted)
            targets = [(i, k, found[k]) for i, k in enumerate(deleted) if k in found]
            targets, spared = spare_shared(conn, tenant, sync_id, targets, leaving=deleted)
            targets, held = hold_for_winners(conn, tenant, sync_id, targets, merges or {})
        kept = [k for _, k, _ in spared]
        holds = [
            self.letter(part, "delete", i, k, {"destination_id": d, "merged_into": w}, HELD, HOLD_MESSAGE)
            for (i, k, d), w in held
        ]
        gone, letters, calls = self._delete_at_destination(part, "delete", targets)
        with self.kit.deps.engine.begin() as conn:
            id_map_store.delete_id_map(conn, tenant, sync_id, [*gone, *kept])
            dead_letter_store.add_dead_letters(conn, [*letters, *holds])
        progress = progress.model_copy(
            update={
                "deletes_propagated": progress.deletes_propagated + len(gone),
                "deletes_failed": progress.deletes_failed + len(letters) + len(holds),
                "deletes_unmapped": progress.deletes_unmapped + len(deleted) - len(found),
                "deletes_kept": progress.deletes_kept + len(kept),
                "calls": progress.calls + calls,
            }
        )
        return progress, gone, kept, [k for (_, k, _), _ in held]

    def release_held(
        self, part: PartRef, progress: PushProgress
    ) -> tuple[PushProgress, list[str], list[str]]:
        """Delete the held merge losers whose winner the last :meth:`upsert` landed (found in its
        transaction: :func:`workflows.merges.releasable`) through the merge guard, and resolve their
        letters; returns progress, deleted keys and kept keys."""
        found = list(self.to_release)
        self.to_release.clear()
        if not found:
            return progress, [], []
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        with self.kit.deps.engine.connect() as conn:
            losers = [k for k, _ in found]
            targets, spared = spare_shared(
                conn, tenant, sync_id, [(i, k, d) for i, (k, d) in enumerate(found)], leaving=losers
            )
        kept = [k for _, k, _ in spared]
        gone, letters, calls = self._delete_at_destination(part, "release", targets)
        with self.kit.deps.engine.begin() as conn:
            id_map_store.delete_id_map(conn, tenant, sync_id, [*gone, *kept])
            resolved = dead_letter_store.resolve_dead_letters(conn, tenant, sync_id, [*gone, *kept])
            dead_letter_store.add_dead_letters(conn, letters)
        progress = progress.model_copy(
            update={
                "deletes_propagated": progress.deletes_propagated + len(gone),
                "deletes_failed": progress.deletes_failed + len(letters),
                "deletes_kept": progress.deletes_kept + len(kept),
                "calls": progress.calls + calls,
                "resolved": progress.resolved + len(resolved),
                "resolved_runs": sorted({*progress.resolved_runs, *(run for _, run in resolved)}),
            }
        )
        return progress, gone, kept

    def _delete_at_destination(
        self, part: PartRef, kind: str, targets: list[Target]
    ) -> tuple[list[str], list[dead_letter_store.DeadLetter], int]:
        """Delete ``targets`` at the destination in one batch call; returns the keys deleted, the
        dead letters of the refused ones and the calls made."""
        stream = self.stream
        letters: list[dead_letter_store.DeadLetter] = []
        gone: list[str] = []
        if not targets:
            return gone, letters, 0
        if not stream.supports_deletes:
            why = f"{self.connector.name} stream {stream.name} does not support deletes"
            for i, k, dest_id in targets:
                letters.append(
                    self.letter(part, kind, i, k, {"destination_id": dest_id}, "DELETE_NOT_SUPPORTED", why)
                )
            return gone, letters, 0
        result = self.connector.write_batch(
            stream.name,
            [{stream.primary_key: dest_id} for _, _, dest_id in targets],
            WriteMode.DELETE,
            external_id=stream.primary_key,
        )
        self._check_outcomes(result, len(targets))
        for (i, k, dest_id), outcome in zip(targets, result.outcomes, strict=True):
            if outcome.ok:
                gone.append(k)
            else:
                letters.append(self.letter(part, kind, i, k, {"destination_id": dest_id}, *_why(outcome)))
        return gone, letters, result.calls

    def _check_outcomes(self, result: WriteResult, sent: int) -> None:
        if len(result.outcomes) != sent:
            raise DataError(
                f"the {self.connector.name} connector answered {len(result.outcomes)} outcomes for {sent} "
                "records (the contract is one per record)"
            )

    def letter(
        self,
        part: PartRef,
        kind: str,
        index: int,
        key: str,
        record: Record,
        code: str,
        vendor_message: str | None,
    ) -> dead_letter_store.DeadLetter:
        """A dead letter: record and vendor message sealed; code and a redacted message in clear."""
        body = {"record": record, "vendor_message": vendor_message, "kind": kind}
        shown = redact(vendor_message, record)
        return seal_letter(
            self.kit.deps.vault, self.ctx, self.run_id, (part.batch_id, part.part, kind, index), key, body,
            code=code, message=f"{kind} refused: {code}" + (f" ({shown})" if shown else ""),
            created=self.kit.deps.clock(),
        )  # fmt: skip


def _accepted_earlier(kit: ActivityKit, ctx: SyncContext, batch_id: str, parts: set[int]) -> list[str]:
    """Keys the destination accepted in ``parts`` written by an earlier attempt: their staged keys
    minus the batch's dead letters."""
    with kit.deps.engine.connect() as conn:
        failed = dead_letter_store.dead_letter_key_hashes(conn, ctx.tenant.id, ctx.spec.id, batch_id)
        staged = staging_store.get_staged(conn, ctx.tenant.id, batch_id)
    keys: list[str] = []
    for p in staged:
        if p.part in parts:
            keys += [k for k in open_part(kit.deps.vault, ctx, p)[0] if k not in failed]
    return keys


def _events(
    ev: BatchEvents,
    ctx: SyncContext,
    progress: PushProgress,
    accepted: list[str],
    gone: list[str],
) -> list[LineageEvent]:
    """``push`` (keys the destination accepted), ``transfer`` when the destination region is not
    home, ``delete`` when source deletes were propagated (or could not be)."""
    counts = {
        "pushed": progress.created + progress.updated, "created": progress.created,
        "updated": progress.updated, "failed": progress.failed, "calls": progress.calls,
        **progress.links.lineage(),
    }  # fmt: skip
    mode = ctx.spec.write_mode
    if progress.skipped:  # refused by the write mode: counted per reason, never dead letters
        counts["skipped"] = sum(progress.skipped.values())
        counts.update({f"skipped_{reason.lower()}": n for reason, n in sorted(progress.skipped.items())})
    links: dict[str, DetailValue] = {}
    if progress.resolved:  # links this push to the refusals it resolved (their runs' push events)
        counts["resolved"] = progress.resolved
        links["resolved_refusals_of_runs"] = ",".join(progress.resolved_runs)
    route = ctx.outbound(ctx.staging_dataset())
    events = [ev(EventKind.PUSH, route, counts, accepted, write_mode=mode.value, **links)]
    dst = ctx.destination_endpoint()
    transfer = ctx.registry.transfer_for(
        ev.run, from_region=ctx.home, to_region=dst.region, subprocessor=dst.subprocessor, at=ev.at,
        record_id_hashes=[*accepted, *gone], source=ctx.staging_dataset(),
        destination=ctx.destination_dataset(),
    )  # fmt: skip
    if transfer is not None:
        events.append(transfer)
    if (
        progress.deletes_propagated
        or progress.deletes_failed
        or progress.deletes_unmapped
        or progress.deletes_kept
        or progress.deletes_kept_by_mode
    ):
        counts = {
            "deleted": progress.deletes_propagated, "failed": progress.deletes_failed,
            "not_at_destination": progress.deletes_unmapped,
            **({"kept_shared": progress.deletes_kept} if progress.deletes_kept else {}),
            **({"kept_by_mode": progress.deletes_kept_by_mode} if progress.deletes_kept_by_mode else {}),
        }  # fmt: skip
        events.append(
            ev(EventKind.DELETE, ctx.outbound(ctx.source_dataset()), counts, gone, write_mode=mode.value)
        )
    return events


def _already_pushed(kit: ActivityKit, ctx: SyncContext, run_id: str, batch: BatchRef) -> PushResult:
    """No staged parts left: an earlier attempt pushed the batch (its ``push`` event says what
    happened) unless the batch was discarded or purged, which is a non-retryable DataError."""
    for event in reversed(kit.ledger(ctx.tenant.id).read_events(run_id=run_id)):
        if event.kind is EventKind.PUSH and event.details.get("batch_id") == batch.batch_id:
            c = event.counts
            return PushResult(
                batch_id=batch.batch_id,
                pushed=c.get("pushed", 0),
                created=c.get("created", 0),
                updated=c.get("updated", 0),
                failed=c.get("failed", 0),
                calls=c.get("calls", 0),
                skipped=c.get("skipped", 0),
            )
    raise DataError(
        f"staged batch {batch.batch_id} is gone (discarded, or purged after its retention) and was never "
        "pushed; run the sync again",
        code="staging_missing",
    )
