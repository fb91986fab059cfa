"""``pull_batch``: source pages → projection → pseudonymization → transforms → sealed staging.

Per page: the keyed hash of each record's source id (before anything else: the id itself leaves
only if the instruction allows it), :func:`governance.policy.project` (fields outside the
instruction never leave the call; marked fields become pseudonyms), the declared transforms, and
the deleted ids as keyed hashes. Pages gather into parts of ``part_records``; each part is sealed
and stored, then heartbeated as :class:`PullProgress` — the resume point of a retry. After the
last part: one ``pull`` event (counts, every record's keyed hash), a ``transfer`` event when the
source region is not the processing region, a ``transform`` event when transforms ran, and one
``store`` event per part.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import CancelledError

from governance.policy import PlanRefused, Transform, apply_transforms, check, project
from governance.vault import key_version_of
from schemas.connector import StreamState
from schemas.errors import ConfigError, DataError
from schemas.lineage import EventKind, LineageEvent
from schemas.sync import BatchRef, PullInput
from store import syncs as store
from workflows.context import ActivityKit, SyncContext
from workflows.metrics import count_pull
from workflows.staging import PendingPart, open_part, resume, seal_part

__all__ = ["PullProgress", "batch_id_of", "pull_batch"]


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
    finished: bool = False  # lineage appended: a retry only returns the BatchRef

    def ref(self, seq: int) -> BatchRef:
        return BatchRef(
            batch_id=self.batch_id,
            seq=seq,
            records=self.records,
            deleted=self.deleted,
            pages=self.pages,
            calls=self.calls,
            withheld_fields=self.withheld_values,
            pseudonymized=self.pseudonymized,
            next_state=self.state,
            has_more=self.has_more,
        )

    def fold(
        self, pending: PendingPart, state: StreamState, has_more: bool, withheld: set[str]
    ) -> PullProgress:
        """This progress plus the pages of ``pending`` (staged or empty), ending at ``state``."""
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
        store.delete_staged(conn, tenant, batch_id, keep=progress.parts if progress else [])
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

    connector = deps.connector_factory(ctx.spec.source_connection_id)
    try:
        pk = kit.stream_spec(connector, ctx.spec.source_connection_id, ctx.spec.source_stream).primary_key
        while (
            has_more
            and progress.pages + pending.pages < inp.max_pages
            and progress.records + len(pending.records) < inp.max_records
            and time.monotonic() - started < inp.time_budget_s
        ):
            if activity.is_cancelled():
                raise CancelledError("pull cancelled")
            size = min(page_size, inp.max_records - progress.records - len(pending.records))
            page = connector.read_page(ctx.spec.source_stream, state, size, fields)
            for rec in page.records:
                rid = rec.get(pk)
                if rid is None or rid == "":
                    raise DataError(f"a {ctx.spec.source_stream} record came without its key {pk}")
                pending.keys.append(keyed_hash(tenant, str(rid)))
            projection = project(
                page.records, ctx.instruction, ctx.spec.source_stream, pseudonymizer=deps.pseudonymizer
            )
            pending.records += apply_transforms(projection.records, transforms)
            pending.deleted += [keyed_hash(tenant, str(d)) for d in page.deleted_ids]
            pending.pages += 1
            pending.calls += page.calls
            pending.withheld_values += projection.withheld_values
            pending.pseudonymized += sum(projection.pseudonymized.values())
            withheld.update(projection.withheld_fields)
            state, has_more = page.next_state, page.has_more
            if len(pending.records) >= part_records or len(pending.deleted) >= part_records:
                progress = _stage(kit, ctx, plan.run_id, inp.batch_seq, progress, pending, expires)
                progress = progress.fold(pending, state, has_more, withheld)
                keys += pending.keys
                pending = PendingPart()
            # Liveness; the details are the resume point of the last staged part, never unstaged pages.
            activity.heartbeat(progress)
        if pending:
            progress = _stage(kit, ctx, plan.run_id, inp.batch_seq, progress, pending, expires)
            keys += pending.keys
        progress = progress.fold(pending, state, has_more, withheld)  # pages with nothing to stage too
        activity.heartbeat(progress)
    finally:
        connector.close()

    if progress.records or progress.deleted:
        kit.append_once(
            tenant,
            plan.run_id,
            batch_id,
            _events(kit, ctx, plan.run_id, progress, keys, transforms, checked.pseudonymized_fields),
        )
    count_pull(plan, progress.records)
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
        store.put_staged(
            conn,
            store.StagedPart(
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
    return progress.model_copy(update={"parts": [*progress.parts, number]})


def _staged_keys(kit: ActivityKit, ctx: SyncContext, batch_id: str) -> list[str]:
    with kit.deps.engine.connect() as conn:
        parts = store.get_staged(conn, ctx.tenant.id, batch_id)
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
                "records": progress.records,
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
        parts = store.get_staged(conn, ctx.tenant.id, batch_id)
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
