"""``pull_batch``: source pages → type contract → projection → pseudonymization → transforms →
sealed staging.

First the source is described once (Salesforce reads need the describe anyway; HubSpot pays one
properties call per activity) and compared with the schema the run was planned with: a field
added, dropped or retyped since the plan is *drift*, reported once per run (a ``drift`` event and
``BatchRef.drift`` for the workflow's progress); a renamed field is a dropped one plus an added
one. Added fields are never read (reads name the plan's fields only); a dropped field is simply
absent from the records.

Per page, one governance call (:class:`governance.policy.PageProcessor`): the keyed hash of each
record's source id (before anything else: the id itself leaves only if the instruction allows it),
the type contract against the run's planned field types — a record whose value no longer fits is
*quarantined*: projected like any other, sealed as a dead letter with code
``QUARANTINED_TYPE_MISMATCH`` and a reason naming the field, the planned and the observed type,
never pushed — then the projection (fields outside the instruction never leave the call; marked
fields become pseudonyms), the declared transforms, and the deleted ids as keyed hashes. Pages
gather into parts of ``part_records``; each part is sealed and stored with its quarantined records
in one transaction, then heartbeated as :class:`PullProgress` — the resume point of a retry. After
the last part: one ``pull`` event (counts of everything pulled, every record's keyed hash; records
of data subjects on the suppression list are dropped in the governance call and only counted, as
``suppressed``, never named), a
``quarantine`` event when records were held back, a ``drift`` event for changes first seen, a
``transfer`` event when the source region is not the processing region, a ``transform`` event when
transforms ran, and one ``store`` event per part.

The database, per attempt: one read (the run's context — cached per worker, see
:meth:`~workflows.context.ActivityKit.context` —, its planned schema and, on a resume, the parts
kept), one write per part (the first also drops parts an earlier attempt staged but never
reported), one lineage append; a pull that staged nothing drops those parts in a write of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import CancelledError

from connectors.base import Connector
from governance.policy import PageProcessor, PlanRefused, Quarantined, Transform, check
from governance.vault import key_version_of
from schemas.connector import Page, ReadMode, StreamState
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from schemas.sync import BatchRef, PullInput
from store import dead_letters as dead_letter_store
from store import runs as run_store
from store import staging as staging_store
from store import suppressions as suppression_store
from workflows.context import ActivityKit, BatchEvents, Route, SyncContext
from workflows.liveness import Keepalive
from workflows.merges import fold_page
from workflows.metrics import count_pull
from workflows.pair_source import PairSource
from workflows.reverse_links import SourceLinks
from workflows.staging import PendingPart, open_part, resume, seal_letter, seal_part

__all__ = ["QUARANTINE_NAMESPACE", "PullProgress", "batch_id_of", "drift_lines", "pull_batch"]

QUARANTINE_NAMESPACE = "crmhub://quarantine"
"""Lineage dataset namespace of quarantined records (sealed dead letters; dataset name: the sync id)."""


class PullProgress(BaseModel):
    """Heartbeat details of ``pull_batch``: everything before ``state`` is staged in ``parts``;
    the counts cover exactly those parts."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    state: StreamState
    has_more: bool = True
    parts: list[int] = []
    pages: int = 0
    calls: int = 0
    records: int = 0
    deleted: int = 0
    withheld_values: int = 0
    withheld_fields: list[str] = []
    pseudonymized: int = 0
    quarantined: int = 0
    suppressed: int = 0  # records of suppressed data subjects dropped at read time (store.suppressions)
    links: dict[str, int] = {}  # relationships read at the source (workflows.reverse_links)
    reasons: dict[str, int] = {}  # quarantine reason → records (field and type names only)
    drift: list[str] = []  # drift first reported by this batch
    reconcile: str | None = None  # a page's Page.reconcile (persisted on the sync: workflows.merges)
    finished: bool = False  # lineage appended: a retry only returns the BatchRef

    def ref(self, seq: int) -> BatchRef:
        return BatchRef(
            batch_id=self.batch_id,
            seq=seq,
            records=self.records,
            quarantined=self.quarantined,
            drift=tuple(self.drift),
            deleted=self.deleted,
            pages=self.pages,
            calls=self.calls,
            withheld_fields=self.withheld_values,
            pseudonymized=self.pseudonymized,
            next_state=self.state,
            has_more=self.has_more,
            reconcile=self.reconcile,
        )

    def fold(
        self, pending: PendingPart, state: StreamState, has_more: bool, withheld: set[str]
    ) -> PullProgress:
        """This progress plus the pages of ``pending`` (staged or empty), ending at ``state``."""
        reasons = dict(self.reasons)
        for h in pending.held:
            reasons[h.reason] = reasons.get(h.reason, 0) + 1
        return self.model_copy(
            update={
                "state": state,
                "has_more": has_more,
                "pages": self.pages + pending.pages,
                "calls": self.calls + pending.calls,
                "records": self.records + len(pending.records),
                "deleted": self.deleted + len(pending.deleted),
                "withheld_values": self.withheld_values + pending.withheld_values,
                "withheld_fields": sorted(withheld),
                "pseudonymized": self.pseudonymized + pending.pseudonymized,
                "quarantined": self.quarantined + len(pending.held),
                "suppressed": self.suppressed + pending.suppressed,
                "reasons": dict(sorted(reasons.items())),
            }
        )


def batch_id_of(run_id: str, seq: int) -> str:
    """The staged batch id of a run's ``seq``-th pull: stable, so a retry finds its own parts."""
    return f"{run_id}.{seq:06d}"


def pull_batch(kit: ActivityKit, inp: PullInput, *, page_size: int, part_records: int) -> BatchRef:
    """Pull one batch (see the module docstring); ``records=0`` and ``deleted=0``: nothing staged."""
    deps, plan = kit.deps, inp.plan
    batch_id = batch_id_of(plan.run_id, inp.batch_seq)
    progress = resume(PullProgress, batch_id)
    if progress is not None and progress.finished:
        return progress.ref(inp.batch_seq)
    with deps.engine.connect() as conn:  # one read: the run's context, its planned schema, kept parts
        ctx = kit.context(
            plan.tenant, plan.sync_id, run_id=plan.run_id, instruction_hash=plan.instruction_hash, conn=conn
        )
        recorded = run_store.run_schema(conn, plan.run_id)
        suppressed = suppression_store.suppressed_keys(conn, plan.tenant)
        kept = progress.parts if progress else []
        earlier = (
            [p for p in staging_store.get_staged(conn, plan.tenant, batch_id) if p.part in kept]
            if kept
            else []
        )
    now = deps.clock()
    try:  # the instruction may have expired since the plan
        checked = check(ctx.sync_plan(now), ctx.instruction, at=now, registry=deps.transforms)
    except PlanRefused as exc:
        kit.refuse(ctx, plan.run_id, exc, exc.reason)
        raise
    if progress is None:
        progress = PullProgress(batch_id=batch_id, state=inp.state)
    expires = now + timedelta(days=ctx.instruction.retention_days)
    stager = _Stager(kit, ctx, plan.run_id, inp.batch_seq, expires, parts=earlier)
    keys = [k for p in earlier for k in open_part(deps.vault, ctx, p)[0]]  # for the pull event
    withheld = set(progress.withheld_fields)
    fields = sorted(checked.fields_read)
    started = time.monotonic()
    pending = PendingPart()
    state, has_more = progress.state, progress.has_more

    connector = deps.connector_factory(ctx.spec.source_connection_id)
    keepalive = Keepalive.start()  # a slow vendor call must not look like a dead worker
    try:
        pk = kit.stream_spec(connector, ctx.spec.source_connection_id, ctx.spec.source_stream).primary_key
        live_types, new_drift = _drift(ctx, recorded, connector)
        if progress.drift:  # an earlier attempt of this batch saw it first (and may have reported it)
            new_drift = list(dict.fromkeys([*progress.drift, *new_drift]))
        progress = progress.model_copy(update={"drift": new_drift})
        links = SourceLinks.of(kit, ctx, connector, pk)  # relationships read at the source
        if links is not None:
            fields = links.vendor_fields(fields)
            if inp.batch_seq == 0 and not kept and inp.state.mode is ReadMode.INCREMENTAL:
                relinked = links.sweep(suppressed)  # association changes move no modification date
                pending.keys += relinked[0]
                pending.records += relinked[1]
        governance = PageProcessor.for_check(
            checked, ctx.instruction, deps.transforms, key_field=pk, pseudonymizer=deps.pseudonymizer,
            planned_types=dict(plan.source_types), live_types=live_types, suppressed=suppressed,
        )  # fmt: skip
        pairs = PairSource.of(kit, ctx, connector)  # an association stream: vanished pairs are deletes
        if pairs is not None and inp.batch_seq == 0 and not kept and inp.state.mode is ReadMode.INCREMENTAL:
            swept = pairs.sweep(state)  # association changes move no modification date
            if swept is not None:
                pending.add(governance.process(swept.records, swept.deleted_ids), calls=swept.calls)
        ahead: list[Page] = []  # read, not yet governed: relationships are read for many pages at once
        reading, more = state, has_more

        def room() -> bool:
            assert progress is not None
            return (
                more
                and progress.pages + pending.pages + len(ahead) < inp.max_pages
                and progress.records + progress.quarantined + pending.read + _read(ahead) < inp.max_records
                and time.monotonic() - started < inp.time_budget_s
            )

        while room():
            if activity.is_cancelled():
                raise CancelledError("pull cancelled")
            left = inp.max_records - progress.records - progress.quarantined - pending.read - _read(ahead)
            page = connector.read_page(ctx.spec.source_stream, reading, min(page_size, left), fields)
            page = pairs.track(page) if pairs is not None else page
            reading, more = page.next_state, page.has_more
            ahead.append(page)
            if links is not None and links.wants_more(ahead) and room():
                continue
            for page in links.enrich(ahead) if links is not None else ahead:
                governed = governance.process(page.records, page.deleted_ids)
                pending.add(governed, calls=page.calls)
                withheld.update(governed.withheld_fields)
                reconcile = fold_page(kit, ctx, pending, page)  # merges, reconcile (issue 13)
                if reconcile and not progress.reconcile:
                    progress = progress.model_copy(update={"reconcile": reconcile})
                state, has_more = page.next_state, page.has_more
                if pending.read >= part_records or len(pending.deleted) >= part_records:
                    progress = stager.stage(progress, pending).fold(pending, state, has_more, withheld)
                    if pairs is not None:  # staged: the snapshot follows
                        pairs.settle()
                    keys += pending.keys
                    pending = PendingPart()
            ahead = []
            # Liveness; the details are the resume point of the last staged part, never unstaged pages.
            keepalive.beat(progress)
        if pending:
            progress = stager.stage(progress, pending)
            keys += pending.keys
        if pairs is not None:
            pairs.settle()
        progress = progress.fold(pending, state, has_more, withheld)  # pages with nothing to stage too
        if links is not None:
            links.settle(deps.clock())
            counts = {k: progress.links.get(k, 0) + v for k, v in links.counts().items()}
            progress = progress.model_copy(update={"links": {**progress.links, **counts}})
        if pairs is not None:
            counts = {k: progress.links.get(k, 0) + v for k, v in pairs.counts().items()}
            progress = progress.model_copy(update={"links": {**progress.links, **counts}})
        keepalive.beat(progress)
    finally:
        connector.close()
        keepalive.stop()  # last: a cancellation deferred until now is raised here
    stager.drop_unreported(progress)

    if progress.records or progress.deleted or progress.quarantined or progress.drift or progress.suppressed:
        held_keys = _quarantined_keys(kit, ctx, batch_id) if progress.quarantined else []
        ev = BatchEvents(ctx.run(plan.run_id), batch_id, deps.clock())
        lineage = _Lineage(ctx, ev, progress, checked.pseudonymized_fields)
        events = lineage.pulled(keys + held_keys, held_keys, governance.transforms, stager.parts)
        kit.append_once(ctx.tenant.id, plan.run_id, batch_id, events)
        if progress.drift:
            with deps.engine.begin() as conn:
                run_store.add_run_drift(conn, plan.run_id, progress.drift)
    count_pull(plan, progress.records, progress.quarantined)
    progress = progress.model_copy(update={"finished": True})
    activity.heartbeat(progress)
    return progress.ref(inp.batch_seq)


@dataclass
class _Stager:
    """Seals and stores the parts of one batch, each with its quarantined records, one transaction a
    part. The first write of an attempt also drops the parts an earlier attempt staged but never
    reported in a heartbeat (those beyond the resume point): a retry reads those pages again."""

    kit: ActivityKit
    ctx: SyncContext
    run_id: str
    seq: int
    expires: datetime
    parts: list[staging_store.StagedPart] = field(default_factory=list)  # the batch's, in order
    dropped: bool = False  # the unreported parts are gone

    def stage(self, progress: PullProgress, pending: PendingPart) -> PullProgress:
        """Seal and store ``pending`` as the batch's next part; returns the progress with it listed."""
        deps, tenant, batch = self.kit.deps, self.ctx.tenant.id, progress.batch_id
        number = max(progress.parts, default=-1) + 1
        sealed, sealed_deleted = seal_part(deps.vault, self.ctx, batch, number, pending)
        part = staging_store.StagedPart(
            batch_id=batch, part=number, tenant=tenant, sync_id=self.ctx.spec.id, run_id=self.run_id,
            seq=self.seq, sealed=sealed, records=len(pending.records), deleted=len(pending.deleted),
            deleted_keys=sealed_deleted, created=deps.clock(), expires_at=self.expires,
        )  # fmt: skip
        held = [
            _letter(self.kit, self.ctx, self.run_id, batch, number, i, h) for i, h in enumerate(pending.held)
        ]
        with deps.engine.begin() as conn:
            if not self.dropped:
                staging_store.delete_staged(conn, tenant, batch, keep=progress.parts)
            staging_store.put_staged(conn, part)
            dead_letter_store.add_dead_letters(conn, held)
        self.dropped = True
        self.parts.append(part)
        return progress.model_copy(update={"parts": [*progress.parts, number]})

    def drop_unreported(self, progress: PullProgress) -> None:
        """Drop the unreported parts of an earlier attempt when this one staged nothing."""
        if not self.dropped:
            with self.kit.deps.engine.begin() as conn:
                staging_store.delete_staged(conn, self.ctx.tenant.id, progress.batch_id, keep=progress.parts)
            self.dropped = True


@dataclass(frozen=True, slots=True)
class _Lineage:
    """The lineage events of one pulled batch."""

    ctx: SyncContext
    ev: BatchEvents
    progress: PullProgress
    pseudonymized_fields: list[str]

    def pulled(
        self,
        keys: list[str],
        held_keys: list[str],
        transforms: Sequence[Transform],
        parts: list[staging_store.StagedPart],
    ) -> list[LineageEvent]:
        """``pull`` (every record read: ``keys``), then ``quarantine`` and ``drift`` (names and
        types, never values), ``transfer`` when the source region is not home, ``transform`` when
        transforms ran, one ``store`` per part; a batch that read nothing but saw drift: ``drift``."""
        ctx, ev, progress = self.ctx, self.ev, self.progress
        if not (progress.records or progress.deleted or progress.quarantined or progress.suppressed):
            return self.contract(held_keys)
        counts = {
            "records": progress.records + progress.quarantined, "staged": progress.records,
            "quarantined": progress.quarantined, "deleted": progress.deleted,
            "withheld_values": progress.withheld_values, "withheld_fields": len(progress.withheld_fields),
            "pseudonymized": progress.pseudonymized, "pages": progress.pages, "calls": progress.calls,
            # records of restricted, objecting or erased subjects dropped at read time: a count only
            **({"suppressed": progress.suppressed} if progress.suppressed else {}),
            **progress.links,  # relationships read at the source (workflows.reverse_links)
        }  # fmt: skip
        withheld, pseudonymized = ",".join(progress.withheld_fields), ",".join(self.pseudonymized_fields)
        events = [ev(EventKind.PULL, ctx.inbound(), counts, keys, withheld=withheld,
                     pseudonymized_fields=pseudonymized)]  # fmt: skip
        events += self.contract(held_keys)
        staging = ctx.staging_dataset()
        transfer = ctx.registry.transfer_for(
            ev.run, from_region=ctx.source_endpoint().region, to_region=ctx.home,
            subprocessor=ctx.registry.processor.id, at=ev.at, record_id_hashes=keys,
            source=ctx.source_dataset(), destination=staging,
        )  # fmt: skip
        if transfer is not None:
            events.append(transfer)
        if transforms:
            refs = ",".join(t.ref for t in transforms)
            within = Route(source=staging, destination=staging)
            events.append(ev(EventKind.TRANSFORM, within, {"records": progress.records}, transforms=refs))
        for p in sorted(parts, key=lambda p: p.part):  # every part, those of an earlier attempt included
            size = {"records": p.records, "deleted": p.deleted, "bytes": len(p.sealed)}
            events.append(
                ev(EventKind.STORE, ctx.stored(), size, part=p.part, sealed=True,
                   key_version=key_version_of(p.sealed), expires_at=p.expires_at.isoformat())
            )  # fmt: skip
        return events

    def contract(self, held_keys: list[str]) -> list[LineageEvent]:
        """The ``quarantine`` and ``drift`` events of the batch."""
        ctx, ev, progress = self.ctx, self.ev, self.progress
        events: list[LineageEvent] = []
        if progress.quarantined:
            held = ctx.stored(DatasetRef(namespace=QUARANTINE_NAMESPACE, name=ctx.spec.id))
            reasons = " | ".join(f"{r}: {n}" for r, n in progress.reasons.items())
            events.append(
                ev(EventKind.QUARANTINE, held, {"records": progress.quarantined}, held_keys, sealed=True,
                   reasons=reasons)
            )  # fmt: skip
        if progress.drift:
            kinds = [line.split(" ", 1)[0] for line in progress.drift]
            counts = {k: kinds.count(k) for k in ("added", "dropped", "retyped")}
            source = Route(source=ctx.source_dataset())
            events.append(ev(EventKind.DRIFT, source, counts, changes=" | ".join(progress.drift)))
        return events


def _read(pages: Sequence[Page]) -> int:
    return sum(len(p.records) for p in pages)


def drift_lines(planned: dict[str, str], live: dict[str, str]) -> list[str]:
    """Schema changes from ``planned`` to ``live`` (field → type), one line each, field names and
    types only: ``added X (type)``, ``dropped X``, ``retyped X: old → new``. A rename is a dropped
    field and an added one (neither vendor's API says which field a new one replaced)."""
    lines = [f"added {f} ({live[f]})" for f in sorted(live.keys() - planned.keys())]
    lines += [f"dropped {f}" for f in sorted(planned.keys() - live.keys())]
    both = sorted(planned.keys() & live.keys())
    lines += [f"retyped {f}: {planned[f]} → {live[f]}" for f in both if planned[f] != live[f]]
    return lines


def _drift(
    ctx: SyncContext, recorded: tuple[dict[str, str], list[str]] | None, connector: Connector
) -> tuple[dict[str, str], list[str]]:
    """The live field types of the source and the drift not yet reported in this run (none when the
    run recorded no planned schema: a run planned before schema contracts existed)."""
    if recorded is None:
        return {}, []
    planned, reported = recorded
    live = {f.name: f.type for f in connector.describe(ctx.spec.source_stream).fields}
    return live, [line for line in drift_lines(planned, live) if line not in reported]


def _letter(
    kit: ActivityKit, ctx: SyncContext, run_id: str, batch_id: str, part: int, index: int, held: Quarantined
) -> dead_letter_store.DeadLetter:
    """A quarantined record as a dead letter: the record sealed (like every dead letter), the
    reason in clear (field and type names only)."""
    body = {"record": held.record, "vendor_message": None, "kind": "quarantine", "reason": held.reason}
    return seal_letter(
        kit.deps.vault, ctx, run_id, (batch_id, part, "quarantine", index), held.key, body,
        code=dead_letter_store.QUARANTINED, message=f"quarantined: {held.reason}", created=kit.deps.clock(),
    )  # fmt: skip


def _quarantined_keys(kit: ActivityKit, ctx: SyncContext, batch_id: str) -> list[str]:
    """Keyed hashes of the batch's quarantined records (those of an earlier attempt included)."""
    with kit.deps.engine.connect() as conn:
        letters = dead_letter_store.list_quarantined(
            conn, ctx.tenant.id, ctx.spec.id, batch_id=batch_id, limit=1_000_000
        )
    return [d.record_key_hash for d in letters]
