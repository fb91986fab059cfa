"""The activities of :class:`~workflows.reconcile.ReconcileWorkflow`: find the records that vanished
from a sync's source without a readable delete (a purged Salesforce recycle bin, a HubSpot GDPR
delete) and delete them at the destination.

    begin_reconcile  (control queue) load the sync, fix the moment T the listing begins → ReconcilePlan
    list_source_ids  (region queue)  Connector.list_ids pages → keyed hashes → ``reconcile_listing``;
                                     bounded by pages and time, heartbeating the listing's state
    apply_reconcile  (region queue)  id-map entries written before T that the listing lacks → guards →
                                     deletes at the destination, 1,000 a call to ``write_batch`` →
                                     ``delete`` lineage event → request cleared, listing forgotten

Guards (nothing is deleted, the result says why): a listing that did not reach its end (an error,
the source connector cannot list ids), a dry run, or more vanished records than
``max_delete_fraction`` of those mapped before T without ``force`` — a truncated listing looks like
mass deletion. A vanished key whose destination record another live key still maps loses its mapping
only (the merge guard, :func:`workflows.merges.spare_shared`). A delete the destination refuses keeps
its mapping and the sync's request, so the next reconciliation tries again. A sync from an
association stream (:mod:`workflows.pair_records`) lists the live pairs (the deals' associations) and
deletes the roles of the vanished ones in every write mode, as its push does: the role *is* the
association. ``apply_reconcile`` is
resumable: deleted keys leave the id map, so a retry recomputes what is left.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import CancelledError

from schemas.connector import Record, WriteMode
from schemas.errors import DataError
from schemas.lineage import EventKind, LineageEvent
from schemas.reconcile import (
    ApplyInput,
    ListInput,
    ListResult,
    ReconcileInput,
    ReconcileOutcome,
    ReconcilePlan,
    ReconcileResult,
)
from services.wiring import ActivityDeps
from store import associations as links_store
from store import id_map as id_map_store
from store import reconcile as reconcile_store
from store import runs as run_store
from store.dead_letters import DeadLetter
from workflows.context import ActivityKit, BatchEvents, SyncContext
from workflows.junctions import WANTED, Junction, is_junction
from workflows.liveness import Keepalive
from workflows.merges import spare_shared
from workflows.staging import resume

__all__ = ["DELETE_CHUNK", "ID_PAGE_SIZE", "ReconcileActivities"]

ID_PAGE_SIZE = 2000
"""Ids asked for per ``list_ids`` call (connectors cap it at their vendor's page: HubSpot 100)."""
DELETE_CHUNK = 1000
"""Deletes per ``write_batch`` call: a multiple of both vendors' delete batch (Salesforce 200, HubSpot
100), so the vendor calls are the minimum ceil(n / batch); the activity heartbeats between calls."""


class _ListProgress(BaseModel):
    """Heartbeat details of ``list_source_ids``: everything before ``result.next_state`` is stored."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    result: ListResult


class _ApplyProgress(BaseModel):
    """Heartbeat details of ``apply_reconcile``: the decision and the deletes done so far."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    result: ReconcileResult  # outcome RUNNING: deleting; anything else: decided (lineage appended)


class ReconcileActivities:
    """The reconciliation activities, bound to injected dependencies; no per-run state."""

    def __init__(self, deps: ActivityDeps, *, id_page_size: int = ID_PAGE_SIZE) -> None:
        self.deps = deps
        self.kit = ActivityKit(deps)
        self.id_page_size = id_page_size

    @activity.defn(name="begin_reconcile")
    def begin_reconcile(self, inp: ReconcileInput) -> ReconcilePlan:
        """Load the sync, record the reconciliation as a run and fix T, the moment its listing begins."""
        return self.kit.guarded("begin_reconcile", lambda: self._begin(inp))

    @activity.defn(name="list_source_ids")
    def list_source_ids(self, inp: ListInput) -> ListResult:
        """Page the source's live ids from ``inp.state`` into the listing, for at most the plan's pages
        and time budget; ``has_more=False`` at the listing's end."""
        return self.kit.guarded("list_source_ids", lambda: self._list(inp))

    @activity.defn(name="apply_reconcile")
    def apply_reconcile(self, inp: ApplyInput) -> ReconcileResult:
        """Judge the listing, delete what vanished at the destination (see the module docstring)."""
        return self.kit.guarded("apply_reconcile", lambda: self._apply(inp))

    # -- begin ---------------------------------------------------------------------------------------

    def _begin(self, inp: ReconcileInput) -> ReconcilePlan:
        deps = self.deps
        ctx = self.kit.context(inp.tenant, inp.sync_id)
        settings, worker = deps.settings, deps.settings.worker
        info = activity.info()
        run_id = info.workflow_run_id or f"{info.workflow_id}.{info.activity_id}"  # stable across retries
        now = deps.clock()
        with deps.engine.begin() as conn:
            existing = run_store.get_run(conn, run_id)
            if existing is not None:  # a retried begin keeps its T (the listing may have started)
                now = existing.started
            run_store.start_run(
                conn,
                run_id=run_id,
                tenant=inp.tenant,
                sync_id=inp.sync_id,
                mode="reconcile",
                trigger=inp.trigger,
                status="running",
                now=now,
                message=f"reconcile: {inp.reason or inp.trigger}",
            )
            reconcile_store.clear_listing(conn, inp.tenant, inp.sync_id, keep_run=run_id)
        return ReconcilePlan(
            tenant=inp.tenant,
            sync_id=inp.sync_id,
            run_id=run_id,
            task_queue=settings.task_queue(settings.region_for(ctx.home)),
            started_at=now,
            source=ctx.source.provider,
            source_stream=ctx.spec.source_stream,
            destination=ctx.destination.provider,
            destination_stream=ctx.spec.destination_stream,
            dry_run=inp.dry_run,
            force=inp.force,
            trigger=inp.trigger,
            reason=inp.reason,
            max_delete_fraction=worker.reconcile_max_delete_fraction,
            page_size=self.id_page_size,
            pages_per_activity=worker.pages_per_activity,
            activity_time_budget_s=worker.activity_time_budget_s,
            heartbeat_timeout_s=worker.heartbeat_timeout_s,
            list_attempts=worker.reconcile_list_attempts,
        )

    # -- list ----------------------------------------------------------------------------------------

    def _list(self, inp: ListInput) -> ListResult:
        plan, deps = inp.plan, self.deps
        ctx = self.kit.context(plan.tenant, plan.sync_id)
        tenant = ctx.tenant.id
        batch_id = f"{plan.run_id}.list.{inp.seq}"
        progress = resume(_ListProgress, batch_id)
        out = progress.result if progress else ListResult(next_state=inp.state, has_more=True)
        keyed_hash = deps.pseudonymizer.keyed_hash
        connector = deps.connector_factory(ctx.spec.source_connection_id)
        keepalive = Keepalive.start()
        started = time.monotonic()
        try:
            if not connector.lists_ids:
                return out.model_copy(update={"has_more": False, "supported": False})
            while out.has_more and out.pages < plan.pages_per_activity:
                if time.monotonic() - started >= plan.activity_time_budget_s:
                    break
                if activity.is_cancelled():
                    raise CancelledError("listing cancelled")
                page = connector.list_ids(ctx.spec.source_stream, out.next_state, plan.page_size)
                with deps.engine.begin() as conn:
                    hashes = [keyed_hash(tenant, str(i)) for i in page.ids]
                    reconcile_store.add_listed(conn, tenant, plan.sync_id, plan.run_id, hashes)
                out = ListResult(
                    next_state=page.next_state,
                    has_more=page.has_more,
                    listed=out.listed + len(page.ids),
                    pages=out.pages + 1,
                    calls=out.calls + page.calls,
                )
                keepalive.beat(_ListProgress(batch_id=batch_id, result=out))
        finally:
            connector.close()
            keepalive.stop()
        return out

    # -- apply ---------------------------------------------------------------------------------------

    def _apply(self, inp: ApplyInput) -> ReconcileResult:
        plan, deps, kit = inp.plan, self.deps, self.kit
        ctx = kit.context(plan.tenant, plan.sync_id)
        tenant, sync_id = ctx.tenant.id, plan.sync_id
        batch_id = f"{plan.run_id}.apply"
        progress = resume(_ApplyProgress, batch_id)
        with deps.engine.connect() as conn:
            listed = reconcile_store.count_listed(conn, tenant, sync_id, plan.run_id)
            rows = WANTED if is_junction(ctx.spec.destination_stream) else None  # a junction's: its rows
            mapped = reconcile_store.mapped_before(conn, tenant, sync_id, plan.started_at, links_field=rows)
            gone = reconcile_store.vanished(
                conn, tenant, sync_id, plan.run_id, mapped_before=plan.started_at, links_field=rows
            )
        if progress is None:
            first = ReconcileResult(
                outcome=ReconcileOutcome.RUNNING,
                listed=listed,
                mapped=mapped,
                vanished=len(gone),
                list_pages=inp.list_pages,
                list_calls=inp.list_calls,
            )
            progress = _ApplyProgress(batch_id=batch_id, result=_judge(plan, inp, first))
        result = progress.result
        if result.outcome is ReconcileOutcome.RUNNING:  # the guards passed (now or in an earlier attempt)
            result, deleted = self._delete(ctx, plan, gone, progress)
            result = result.model_copy(update={"outcome": ReconcileOutcome.COMPLETED})
            result = result.model_copy(update={"message": _completed_message(plan, result)})
            kit.append(tenant, self._events(ctx, plan, result, deleted))
            activity.heartbeat(_ApplyProgress(batch_id=batch_id, result=result))  # a retry only closes
        self._close(plan, result)
        return result

    def _delete(
        self, ctx: SyncContext, plan: ReconcilePlan, gone: list[tuple[str, str]], progress: _ApplyProgress
    ) -> tuple[ReconcileResult, list[str]]:
        """Delete the vanished records at the destination, :data:`DELETE_CHUNK` a call; the keys deleted."""
        deps, kit = self.deps, self.kit
        if is_junction(ctx.spec.destination_stream):  # a vanished row unlinks, whatever the write mode
            return self._unlink(ctx, [k for k, _ in gone], progress.result)
        pairs = is_junction(ctx.spec.source_stream)  # a pair's record is the association (pair_records)
        if not pairs and not ctx.spec.write_mode.propagates_deletes:  # upsert / ... keep them
            return progress.result, []
        tenant, sync_id = ctx.tenant.id, plan.sync_id
        dst = ctx.destination_endpoint()
        ctx.registry.check_transfer(ctx.home, ctx.home, dst.region, dst.subprocessor, tenant=tenant)
        result = progress.result
        leaving = [k for k, _ in gone]
        deleted: list[str] = []
        connector = deps.connector_factory(ctx.spec.destination_connection_id)
        keepalive = Keepalive.start()
        try:
            spec = kit.stream_spec(connector, ctx.spec.destination_connection_id, ctx.spec.destination_stream)
            if gone and not spec.supports_deletes:
                raise DataError(
                    f"{connector.name} stream {spec.name} does not support deletes: {len(gone)} records that "
                    "vanished from the source stay at the destination",
                    code="DELETE_NOT_SUPPORTED",
                )
            for start in range(0, len(gone), DELETE_CHUNK):
                if activity.is_cancelled():
                    raise CancelledError("reconciliation cancelled")
                chunk = [(i, k, d) for i, (k, d) in enumerate(gone[start : start + DELETE_CHUNK])]
                with deps.engine.connect() as conn:
                    targets, spared = spare_shared(conn, tenant, sync_id, chunk, leaving=leaving)
                ok: list[str] = []
                calls = 0
                if targets:
                    answer = connector.write_batch(
                        spec.name,
                        [{spec.primary_key: d} for _, _, d in targets],
                        WriteMode.DELETE,
                        external_id=spec.primary_key,
                    )
                    if len(answer.outcomes) != len(targets):
                        raise DataError(
                            f"the {connector.name} connector answered {len(answer.outcomes)} outcomes for "
                            f"{len(targets)} deletes (the contract is one per record)"
                        )
                    ok = [k for (_, k, _), o in zip(targets, answer.outcomes, strict=True) if o.ok]
                    calls = answer.calls
                with deps.engine.begin() as conn:
                    id_map_store.delete_id_map(conn, tenant, sync_id, [*ok, *(k for _, k, _ in spared)])
                    if pairs:  # as a vanished pair's delete does (workflows.pair_records)
                        links_store.drop_links(conn, tenant, sync_id, WANTED, ok)
                deleted += ok
                result = result.model_copy(
                    update={
                        "deleted": result.deleted + len(ok),
                        "kept": result.kept + len(spared),
                        "failed": result.failed + len(targets) - len(ok),
                        "delete_batches": result.delete_batches + (1 if targets else 0),
                        "delete_calls": result.delete_calls + calls,
                    }
                )
                keepalive.beat(progress.model_copy(update={"result": result}))
        finally:
            connector.close()
            keepalive.stop()
        return result, deleted

    def _unlink(
        self, ctx: SyncContext, keys: list[str], result: ReconcileResult
    ) -> tuple[ReconcileResult, list[str]]:
        """A junction sync's vanished rows: their pairs archived in batch calls (workflows.junctions)."""
        if not keys:
            return result, []
        dst = ctx.destination_endpoint()
        ctx.registry.check_transfer(ctx.home, ctx.home, dst.region, dst.subprocessor, tenant=ctx.tenant.id)
        connector = self.deps.connector_factory(ctx.spec.destination_connection_id)
        try:
            done = Junction.of(self.kit, ctx, connector).push([], [], keys, _no_letter)
        finally:
            connector.close()
        links = done.links
        update = {
            "deleted": result.deleted + links.unlinked,
            "delete_calls": result.delete_calls + links.calls,
            "delete_batches": result.delete_batches + (1 if links.calls else 0),
        }
        return result.model_copy(update=update), keys

    def _events(
        self, ctx: SyncContext, plan: ReconcilePlan, result: ReconcileResult, deleted: list[str]
    ) -> list[LineageEvent]:
        """A ``delete`` event (reason: the reconciliation) and a ``transfer`` event if regions differ."""
        ev = BatchEvents(ctx.run(plan.run_id), f"{plan.run_id}.apply", self.deps.clock())
        counts = {
            "deleted": result.deleted, "failed": result.failed, "kept_shared": result.kept,
            "listed": result.listed, "mapped": result.mapped, "vanished": result.vanished,
            "calls": result.list_calls + result.delete_calls,
        }  # fmt: skip
        route = ctx.outbound(ctx.source_dataset())
        events = [
            ev(
                EventKind.DELETE,
                route,
                counts,
                deleted,
                reconcile=True,
                reason=plan.reason or plan.trigger,
                write_mode=ctx.spec.write_mode.value,
            )
        ]
        dst = ctx.destination_endpoint()
        transfer = ctx.registry.transfer_for(
            ev.run, from_region=ctx.home, to_region=dst.region, subprocessor=dst.subprocessor, at=ev.at,
            record_id_hashes=deleted, source=ctx.source_dataset(), destination=ctx.destination_dataset(),
        )  # fmt: skip
        if transfer is not None and deleted:
            events.append(transfer)
        return events

    def _close(self, plan: ReconcilePlan, result: ReconcileResult) -> None:
        """Record the run's end, forget the listing, clear the sync's request when the gap is closed,
        sign a ledger checkpoint."""
        deps = self.deps
        with deps.engine.begin() as conn:
            if result.outcome is ReconcileOutcome.COMPLETED and not result.failed:
                reconcile_store.clear_reconcile(
                    conn, plan.tenant, plan.sync_id, requested_before=plan.started_at
                )
            reconcile_store.clear_listing(conn, plan.tenant, plan.sync_id)
            counts = result.model_dump(include=_COUNTED)
            run_store.finish_run(
                conn, plan.run_id, status=result.outcome.value, counts=counts, message=result.message,
                now=deps.clock(),
            )  # fmt: skip
        self.kit.ledger(plan.tenant).checkpoint(deps.signer)


_COUNTED = {"listed", "mapped", "vanished", "deleted", "kept", "failed", "list_pages", "list_calls",
            "delete_batches", "delete_calls"}  # fmt: skip


def _judge(plan: ReconcilePlan, inp: ApplyInput, first: ReconcileResult) -> ReconcileResult:
    """The guards: whether the listing may delete anything (``RUNNING``: go on and delete)."""
    stream = f"{plan.source}/{plan.source_stream}"
    if inp.unsupported:
        return first.model_copy(
            update={
                "outcome": ReconcileOutcome.UNSUPPORTED,
                "message": f"the {plan.source} connector cannot list the ids of {plan.source_stream}: "
                "deletes it never reports cannot be found; nothing deleted",
            }
        )
    if not inp.complete:
        return first.model_copy(
            update={
                "outcome": ReconcileOutcome.INCOMPLETE,
                "message": f"the listing of {stream} did not reach its end ({inp.why_incomplete}); "
                f"{first.listed:,} ids listed, nothing deleted — run crmhub sync reconcile again",
            }
        )
    share = first.vanished / first.mapped if first.mapped else 0.0
    if plan.dry_run:
        return first.model_copy(
            update={
                "outcome": ReconcileOutcome.DRY_RUN,
                "message": f"dry run: {first.vanished:,} of {first.mapped:,} records mapped at "
                f"{plan.destination}/{plan.destination_stream} vanished from {stream} ({share:.1%}); "
                "nothing deleted",
            }
        )
    if share > plan.max_delete_fraction and not plan.force:
        return first.model_copy(
            update={
                "outcome": ReconcileOutcome.REFUSED,
                "message": f"{first.vanished:,} of {first.mapped:,} records mapped at the destination "
                f"({share:.1%}) are missing from the listing of {stream}, more than "
                f"reconcile_max_delete_fraction {plan.max_delete_fraction:.0%}: nothing deleted. A "
                "truncated listing looks like this; if the source really lost them, run crmhub sync "
                "reconcile --force",
            }
        )
    return first


def _completed_message(plan: ReconcilePlan, r: ReconcileResult) -> str:
    dest = f"{plan.destination}/{plan.destination_stream}"
    text = f"{r.vanished:,} of {r.mapped:,} mapped records vanished from {plan.source}/{plan.source_stream}: "
    text += f"{r.deleted:,} deleted at {dest} in {r.delete_calls:,} calls"
    if r.kept:
        text += f", {r.kept:,} kept (another live source record maps them)"
    if r.failed:
        text += f", {r.failed:,} refused by {dest} (kept mapped: the next reconciliation retries)"
    return text


def _no_letter(kind: str, index: int, key: str, record: Record, code: str, message: str | None) -> DeadLetter:
    """A reconciliation only unlinks vanished rows, which write no letter (none waits, none is created)."""
    raise DataError(f"unexpected dead letter {code} while unlinking a vanished junction row")
