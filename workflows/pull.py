"""``pull_batch``: source pages → type contract → projection → pseudonymization → transforms →
sealed staging.

First the source is described once (Salesforce reads need the describe anyway; HubSpot pays one
properties call per activity) and compared with the schema the run was planned with: a field
added, dropped or retyped since the plan is *drift*, reported once per run (a ``drift`` event and
``BatchRef.drift`` for the workflow's progress); a renamed field is a dropped one plus an added
one. Added fields are never read (reads name the plan's fields only); a dropped field is simply
absent from the records.

Per page: the keyed hash of each record's source id (before anything else: the id itself leaves
only if the instruction allows it); :func:`governance.policy.screen` against the run's planned
field types — a record whose value no longer fits is *quarantined*: projected like any other,
sealed as a dead letter with code ``QUARANTINED_TYPE_MISMATCH`` and a reason naming the field, the
planned and the observed type, never pushed; the rest go through
:func:`governance.policy.project` (fields outside the instruction never leave the call; marked
fields become pseudonyms), the declared transforms, and the deleted ids as keyed hashes. Pages
gather into parts of ``part_records``; each part is sealed and stored (with its quarantined
records), then heartbeated as :class:`PullProgress` — the resume point of a retry. After the last
part: one ``pull`` event (counts of everything pulled, every record's keyed hash), a
``quarantine`` event when records were held back, a ``drift`` event for changes first seen, a
``transfer`` event when the source region is not the processing region, a ``transform`` event when
transforms ran, and one ``store`` event per part.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import CancelledError

from connectors.base import Connector
from governance.policy import PlanRefused, Screening, Transform, apply_transforms, check, project, screen
from governance.vault import key_version_of
from schemas.connector import Record, StreamState
from schemas.errors import ConfigError, DataError
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from schemas.sync import BatchRef, PullInput
from store import dead_letters as dead_letter_store
from store import runs as run_store
from store import staging as staging_store
from workflows.context import ActivityKit, SyncContext
from workflows.liveness import Keepalive
from workflows.merges import fold_page
from workflows.metrics import count_pull
from workflows.staging import Held, PendingPart, dead_letter_id, open_part, resume, seal_part

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
                "reasons": dict(sorted(reasons.items())),
            }
        )


def batch_id_of(run_id: str, seq: int) -> str:
    """The staged batch id of a run's ``seq``-th pull: stable, so a retry finds its own parts."""
    return f"{run_id}.{seq:06d}"


def pull_batch(kit: ActivityKit, inp: PullInput, *, page_size: int, part_records: int) -> BatchRef:
    """Pull one batch (see the module docstring); ``records=0`` and ``deleted=0``: nothing staged."""
    deps = kit.deps
    plan = inp.plan
    ctx = kit.context(plan.tenant, plan.sync_id, instruction_hash=plan.instruction_hash)
    now = deps.clock()
    tenant = ctx.tenant.id
    batch_id = batch_id_of(plan.run_id, inp.batch_seq)
    progress = resume(PullProgress, batch_id)
    if progress is not None and progress.finished:
        return progress.ref(inp.batch_seq)
    try:  # the instruction may have expired since the plan
        checked = check(ctx.sync_plan(now), ctx.instruction, at=now, registry=deps.transforms)
    except PlanRefused as exc:
        kit.refuse(ctx, plan.run_id, exc, exc.reason)
        raise
    transforms: list[Transform] = []
    for ref in checked.transforms:
        t = deps.transforms.get(ref)
        if t is None:  # pragma: no cover - check() refused unknown transforms already
            raise ConfigError(f"transform {ref} is not registered")
        transforms.append(t)
    with deps.engine.begin() as conn:  # parts staged by an attempt that did not heartbeat them
        staging_store.delete_staged(conn, tenant, batch_id, keep=progress.parts if progress else [])
    if progress is None:
        progress = PullProgress(batch_id=batch_id, state=inp.state)
    keys = _staged_keys(kit, ctx, batch_id) if progress.parts else []  # for the pull event
    withheld = set(progress.withheld_fields)
    expires = now + timedelta(days=ctx.instruction.retention_days)
    fields = sorted(checked.fields_read)
    keyed_hash = deps.pseudonymizer.keyed_hash
    started = time.monotonic()
    pending = PendingPart()
    state, has_more = progress.state, progress.has_more

    planned_types = dict(plan.source_types)
    connector = deps.connector_factory(ctx.spec.source_connection_id)
    keepalive = Keepalive.start()  # a slow vendor call must not look like a dead worker
    try:
        pk = kit.stream_spec(connector, ctx.spec.source_connection_id, ctx.spec.source_stream).primary_key
        live_types, new_drift = _drift(kit, ctx, plan.run_id, connector)
        if progress.drift:  # an earlier attempt of this batch saw it first (and may have reported it)
            new_drift = list(dict.fromkeys([*progress.drift, *new_drift]))
        progress = progress.model_copy(update={"drift": new_drift})
        while (
            has_more
            and progress.pages + pending.pages < inp.max_pages
            and progress.records + progress.quarantined + pending.read < inp.max_records
            and time.monotonic() - started < inp.time_budget_s
        ):
            if activity.is_cancelled():
                raise CancelledError("pull cancelled")
            size = min(page_size, inp.max_records - progress.records - progress.quarantined - pending.read)
            page = connector.read_page(ctx.spec.source_stream, state, size, fields)
            keys_in: list[str] = []
            for rec in page.records:
                rid = rec.get(pk)
                if rid is None or rid == "":
                    raise DataError(f"a {ctx.spec.source_stream} record came without its key {pk}")
                keys_in.append(keyed_hash(tenant, str(rid)))
            screened = screen(page.records, planned_types, live=live_types)
            pending.keys += [keys_in[i] for i in screened.kept_positions]
            if screened.held:
                pending.held += _held(kit, ctx, page.records, keys_in, screened)
            projection = project(
                screened.kept, ctx.instruction, ctx.spec.source_stream, pseudonymizer=deps.pseudonymizer
            )
            pending.records += apply_transforms(projection.records, transforms)
            reconcile = fold_page(kit, ctx, pending, page)  # deletes, merges, reconcile (issue 13)
            if reconcile and not progress.reconcile:
                progress = progress.model_copy(update={"reconcile": reconcile})
            pending.pages += 1
            pending.calls += page.calls
            pending.withheld_values += projection.withheld_values
            pending.pseudonymized += sum(projection.pseudonymized.values())
            withheld.update(projection.withheld_fields)
            state, has_more = page.next_state, page.has_more
            if pending.read >= part_records or len(pending.deleted) >= part_records:
                progress = _stage(kit, ctx, plan.run_id, inp.batch_seq, progress, pending, expires)
                progress = progress.fold(pending, state, has_more, withheld)
                keys += pending.keys
                pending = PendingPart()
            # Liveness; the details are the resume point of the last staged part, never unstaged pages.
            keepalive.beat(progress)
        if pending:
            progress = _stage(kit, ctx, plan.run_id, inp.batch_seq, progress, pending, expires)
            keys += pending.keys
        progress = progress.fold(pending, state, has_more, withheld)  # pages with nothing to stage too
        keepalive.beat(progress)
    finally:
        connector.close()
        keepalive.stop()  # last: a cancellation deferred until now is raised here

    if progress.records or progress.deleted or progress.quarantined or progress.drift:
        held_keys = _quarantined_keys(kit, ctx, batch_id) if progress.quarantined else []
        contract = _contract_events(kit, ctx, plan.run_id, progress, held_keys)
        events = contract  # a batch that pulled nothing but saw drift
        if progress.records or progress.deleted or progress.quarantined:
            pseudonymized = checked.pseudonymized_fields
            pulled = _events(kit, ctx, plan.run_id, progress, keys + held_keys, transforms, pseudonymized)
            events = [pulled[0], *contract, *pulled[1:]]
        kit.append_once(tenant, plan.run_id, batch_id, events)
        if progress.drift:
            with deps.engine.begin() as conn:
                run_store.add_run_drift(conn, plan.run_id, progress.drift)
    count_pull(plan, progress.records, progress.quarantined)
    progress = progress.model_copy(update={"finished": True})
    activity.heartbeat(progress)
    return progress.ref(inp.batch_seq)


def _stage(
    kit: ActivityKit,
    ctx: SyncContext,
    run_id: str,
    seq: int,
    progress: PullProgress,
    pending: PendingPart,
    expires: datetime,
) -> PullProgress:
    """Seal and store ``pending`` as the batch's next part; returns the progress with it listed."""
    number = max(progress.parts, default=-1) + 1
    sealed, sealed_deleted = seal_part(kit.deps.vault, ctx, progress.batch_id, number, pending)
    with kit.deps.engine.begin() as conn:
        staging_store.put_staged(
            conn,
            staging_store.StagedPart(
                batch_id=progress.batch_id,
                part=number,
                tenant=ctx.tenant.id,
                sync_id=ctx.spec.id,
                run_id=run_id,
                seq=seq,
                sealed=sealed,
                records=len(pending.records),
                deleted=len(pending.deleted),
                deleted_keys=sealed_deleted,
                created=kit.deps.clock(),
                expires_at=expires,
            ),
        )
        batch = progress.batch_id
        held = [_letter(kit, ctx, run_id, batch, number, i, h) for i, h in enumerate(pending.held)]
        dead_letter_store.add_dead_letters(conn, held)
    return progress.model_copy(update={"parts": [*progress.parts, number]})


def _staged_keys(kit: ActivityKit, ctx: SyncContext, batch_id: str) -> list[str]:
    with kit.deps.engine.connect() as conn:
        parts = staging_store.get_staged(conn, ctx.tenant.id, batch_id)
    keys: list[str] = []
    for p in parts:
        keys += open_part(kit.deps.vault, ctx, p)[0]
    return keys


def _events(
    kit: ActivityKit,
    ctx: SyncContext,
    run_id: str,
    progress: PullProgress,
    keys: list[str],
    transforms: list[Transform],
    pseudonymized_fields: list[str],
) -> list[LineageEvent]:
    src = ctx.source_endpoint()
    batch_id = progress.batch_id
    events = [
        kit.event(
            ctx,
            run_id,
            EventKind.PULL,
            source=ctx.source_dataset(),
            destination=ctx.staging_dataset(),
            counts={
                "records": progress.records + progress.quarantined,
                "staged": progress.records,
                "quarantined": progress.quarantined,
                "deleted": progress.deleted,
                "withheld_values": progress.withheld_values,
                "withheld_fields": len(progress.withheld_fields),
                "pseudonymized": progress.pseudonymized,
                "pages": progress.pages,
                "calls": progress.calls,
            },
            record_id_hashes=tuple(keys),
            subprocessor=src.subprocessor,
            region_from=src.region,
            region_to=ctx.home,
            details={
                "batch_id": batch_id,
                "withheld": ",".join(progress.withheld_fields),
                "pseudonymized_fields": ",".join(pseudonymized_fields),
            },
        )
    ]
    transfer = ctx.registry.transfer(
        tenant=ctx.tenant.id,
        run_id=run_id,
        from_region=src.region,
        to_region=ctx.home,
        subprocessor=ctx.registry.processor.id,
        record_id_hashes=keys,
        sync_id=ctx.spec.id,
        purpose=ctx.instruction.purpose,
        instruction_version=ctx.instruction.version,
        instruction_hash=ctx.instruction.content_hash,
        source=ctx.source_dataset(),
        destination=ctx.staging_dataset(),
        timestamp=kit.deps.clock(),
    )
    if transfer is not None:
        events.append(transfer)
    if transforms:
        events.append(
            kit.event(
                ctx,
                run_id,
                EventKind.TRANSFORM,
                source=ctx.staging_dataset(),
                destination=ctx.staging_dataset(),
                counts={"records": progress.records},
                details={"batch_id": batch_id, "transforms": ",".join(t.ref for t in transforms)},
            )
        )
    with kit.deps.engine.connect() as conn:  # every part, those of an earlier attempt included
        parts = staging_store.get_staged(conn, ctx.tenant.id, batch_id)
    for p in parts:
        events.append(
            kit.event(
                ctx,
                run_id,
                EventKind.STORE,
                source=ctx.source_dataset(),
                destination=ctx.staging_dataset(),
                counts={"records": p.records, "deleted": p.deleted, "bytes": len(p.sealed)},
                subprocessor=ctx.registry.processor.id,
                region_to=ctx.home,
                details={
                    "batch_id": batch_id,
                    "part": p.part,
                    "sealed": True,
                    "key_version": key_version_of(p.sealed),
                    "expires_at": p.expires_at.isoformat(),
                },
            )
        )
    return events


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
    kit: ActivityKit, ctx: SyncContext, run_id: str, connector: Connector
) -> tuple[dict[str, str], list[str]]:
    """The live field types of the source and the drift not yet reported in this run (none when the
    run recorded no planned schema: a run planned before schema contracts existed)."""
    with kit.deps.engine.connect() as conn:
        recorded = run_store.run_schema(conn, run_id)
    if recorded is None:
        return {}, []
    planned, reported = recorded
    live = {f.name: f.type for f in connector.describe(ctx.spec.source_stream).fields}
    return live, [line for line in drift_lines(planned, live) if line not in reported]


def _held(
    kit: ActivityKit, ctx: SyncContext, records: list[Record], keys: list[str], screened: Screening
) -> list[Held]:
    """The quarantined records of a page, projected to the instruction (and pseudonymized) like the
    records that go on: the quarantine holds nothing the staging would not."""
    picked = [records[i] for i, _ in screened.held]
    projection = project(
        picked, ctx.instruction, ctx.spec.source_stream, pseudonymizer=kit.deps.pseudonymizer
    )
    return [
        Held(keys[i], rec, "; ".join(m.reason for m in misfits))
        for (i, misfits), rec in zip(screened.held, projection.records, strict=True)
    ]


def _letter(
    kit: ActivityKit, ctx: SyncContext, run_id: str, batch_id: str, part: int, index: int, held: Held
) -> dead_letter_store.DeadLetter:
    """A quarantined record as a dead letter: the record sealed (like every dead letter), the
    reason in clear (field and type names only)."""
    deps, tenant, sync_id = kit.deps, ctx.tenant.id, ctx.spec.id
    letter_id = dead_letter_id(tenant, sync_id, batch_id, part, "quarantine", index)
    body = {"record": held.record, "vendor_message": None, "kind": "quarantine", "reason": held.reason}
    sealed = deps.vault.seal(
        tenant,
        json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode(),
        dataset="dead-letter",
        object_id=letter_id,
        purpose=ctx.instruction.purpose,
    )
    return dead_letter_store.DeadLetter(
        id=letter_id,
        tenant=tenant,
        sync_id=sync_id,
        run_id=run_id,
        batch_id=batch_id,
        record_key_hash=held.key,
        sealed_record=sealed,
        error_code=dead_letter_store.QUARANTINED,
        error_message=f"quarantined: {held.reason}",
        created=deps.clock(),
    )


def _quarantined_keys(kit: ActivityKit, ctx: SyncContext, batch_id: str) -> list[str]:
    """Keyed hashes of the batch's quarantined records (those of an earlier attempt included)."""
    with kit.deps.engine.connect() as conn:
        letters = dead_letter_store.list_quarantined(
            conn, ctx.tenant.id, ctx.spec.id, batch_id=batch_id, limit=1_000_000
        )
    return [d.record_key_hash for d in letters]


def _contract_events(
    kit: ActivityKit, ctx: SyncContext, run_id: str, progress: PullProgress, held_keys: list[str]
) -> list[LineageEvent]:
    """The ``quarantine`` and ``drift`` events of a batch (names and types, never values)."""
    events: list[LineageEvent] = []
    batch_id = progress.batch_id
    if progress.quarantined:
        events.append(
            kit.event(
                ctx,
                run_id,
                EventKind.QUARANTINE,
                source=ctx.source_dataset(),
                destination=DatasetRef(namespace=QUARANTINE_NAMESPACE, name=ctx.spec.id),
                counts={"records": progress.quarantined},
                record_id_hashes=tuple(held_keys),
                subprocessor=ctx.registry.processor.id,
                region_to=ctx.home,
                details={
                    "batch_id": batch_id,
                    "sealed": True,
                    "reasons": " | ".join(f"{r}: {n}" for r, n in progress.reasons.items()),
                },
            )
        )
    if progress.drift:
        kinds = [line.split(" ", 1)[0] for line in progress.drift]
        events.append(
            kit.event(
                ctx,
                run_id,
                EventKind.DRIFT,
                source=ctx.source_dataset(),
                counts={k: kinds.count(k) for k in ("added", "dropped", "retyped")},
                details={"batch_id": batch_id, "changes": " | ".join(progress.drift)},
            )
        )
    return events
