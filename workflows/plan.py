"""``plan_sync``: check a run against the processing instruction and the transfer rules (fail closed).

Two checks, both before any record moves:

1. purpose — :func:`governance.policy.check` of the sync's mapping (plus the key that fills the
   destination id property) and transforms against the instruction, at the current time and with
   the live source schema; every field the plan reads must exist at the source;
2. route — source endpoint → crmhub in the tenant's home region → destination endpoint: every
   region must be in the instruction's ``permitted_regions``, both vendors in its
   ``permitted_subprocessors``, and the registry must permit each move (authorised subprocessors,
   recorded routes out of the EEA), and crmhub's infrastructure (hosting, database, Temporal) must
   operate in the home region. The registry is the tenant's effective version
   (:mod:`governance.registry_versions`): a tenant that objected to a change and chose ``stop`` is
   refused (rule ``subprocessor_objection``); once the registry is versioned, the run cites the
   version in a ``registry`` event (``step=planned``).

3. types — the describe types of the fields the run reads are its contract (``source_types``; a
   pull quarantines a value that no longer fits). Runs under one instruction accept one set of
   types: a field retyped at the source since then refuses the plan (rule ``schema_drift``) until
   the controller re-issues the instruction and the sync cites the new version
   (:func:`governance.policy.check_types`, docs/governance.md "Schema drift").

A refusal is a ``refusal`` lineage event, a refused run and a non-retryable ``PurposeViolation`` or
``TransferNotPermitted`` naming the rule (never a value).
"""

from __future__ import annotations

from typing import Any

from governance.policy import CheckResult, PlanRefused, check, check_types
from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError, PolicyError, PurposeViolation, TransferNotPermitted
from schemas.lineage import EventKind
from schemas.sync import PlanInput, SyncMode, SyncPlanRef, SyncStatus
from store import runs as run_store
from store import syncs as sync_store
from store.subprocessor_versions import ObjectionChoice
from workflows.associations import any_declared, check_relationships, is_relationship
from workflows.context import ActivityKit, SyncContext
from workflows.junction_labels import check_labels
from workflows.junctions import check_junction
from workflows.pair_records import check_pairs

__all__ = ["plan_sync"]


def plan_sync(kit: ActivityKit, inp: PlanInput) -> SyncPlanRef:
    """The checked plan of run ``inp.run_id`` (see the module docstring); records the run as running."""
    deps = kit.deps
    now = deps.clock()
    settings = deps.settings
    with deps.engine.connect() as conn:  # one read: the sync's context and the types it accepted
        ctx = kit.context(inp.tenant, inp.sync_id, run_id=inp.run_id, conn=conn)
        accepted = sync_store.accepted_types(conn, ctx.tenant.id, ctx.spec.id)
    region = settings.region_for(ctx.home)
    task_queue = settings.task_queue(region)
    requested = inp.mode or (SyncMode(ctx.spec.default_mode) if ctx.spec.default_mode else None)
    cursor = ctx.sync.cursor
    if requested is SyncMode.FULL or cursor is None:
        mode, start_state = SyncMode.FULL, StreamState(mode=ReadMode.FULL)
    else:
        mode = SyncMode.INCREMENTAL
        start_state = cursor.model_copy(update={"mode": ReadMode.INCREMENTAL, "page_token": None})

    connector = deps.connector_factory(ctx.spec.source_connection_id)
    try:
        schema = connector.describe(ctx.spec.source_stream)
    finally:
        connector.close()
    live = schema.names()
    live_types = {f.name: f.type for f in schema.fields}
    try:
        result = check(
            ctx.sync_plan(now), ctx.instruction, at=now, source_fields=live, registry=deps.transforms
        )
    except PlanRefused as exc:
        kit.refuse(ctx, inp.run_id, exc, exc.reason)
        raise
    # A refusal before a config error:
    types = _check_types(kit, ctx, inp.run_id, result, live_types, accepted)
    _check_fields_exist(kit, ctx, result, live)
    if any_declared(ctx.spec.mapping):  # relationships: resolvable, readable and writable
        destination = deps.connector_factory(ctx.spec.destination_connection_id)
        try:
            with deps.engine.connect() as conn:
                check_relationships(conn, ctx, destination, source=connector)
                check_junction(conn, ctx)
                check_labels(ctx)
                check_pairs(conn, ctx)
        finally:
            destination.close()
    _check_route(kit, ctx, inp.run_id)
    if ctx.registry_version is not None:  # the run cites the registry version it was planned under
        cited = ctx.run(inp.run_id).event(
            EventKind.REGISTRY,
            at=now,
            details={
                "step": "planned",
                "version": ctx.registry_version,
                "objected_version": ctx.registry_held_by.version if ctx.registry_held_by else None,
            },
        )
        kit.append(ctx.tenant.id, [cited])

    with deps.engine.begin() as conn:
        run_store.start_run(
            conn,
            run_id=inp.run_id,
            tenant=ctx.tenant.id,
            sync_id=ctx.spec.id,
            mode=mode.value,
            trigger="workflow",
            status=SyncStatus.RUNNING.value,
            now=now,
        )
        sync_store.set_sync_status(
            conn, ctx.tenant.id, ctx.spec.id, SyncStatus.RUNNING.value, now=now, last_run_id=inp.run_id
        )
        run_store.set_planned_schema(conn, inp.run_id, live_types)
        sync_store.set_accepted_types(
            conn, ctx.tenant.id, ctx.spec.id, instruction_hash=ctx.instruction.content_hash, types=types
        )
    worker = settings.worker
    return SyncPlanRef(
        tenant=ctx.tenant.id,
        sync_id=ctx.spec.id,
        run_id=inp.run_id,
        mode=mode,
        region=region,
        task_queue=task_queue,
        source=ctx.source.provider,
        source_stream=ctx.spec.source_stream,
        destination=ctx.destination.provider,
        destination_stream=ctx.spec.destination_stream,
        purpose=ctx.instruction.purpose,
        instruction_version=ctx.instruction.version,
        instruction_hash=ctx.instruction.content_hash,
        start_state=start_state,
        withheld_fields=tuple(result.withheld_fields),
        source_types=tuple(sorted((f, t) for f, t in types.items() if f in result.fields_read)),
        pages_per_activity=worker.pages_per_activity,
        records_per_batch=worker.records_per_batch,
        activity_time_budget_s=worker.activity_time_budget_s,
        continue_as_new_after_batches=worker.continue_as_new_after_batches,
        heartbeat_timeout_s=worker.heartbeat_timeout_s,
        region_wait_s=worker.region_wait_s,
        retry_rejected_per_run=worker.retry_rejected_per_run,
    )


def _check_fields_exist(kit: ActivityKit, ctx: SyncContext, result: CheckResult, live: set[str]) -> None:
    """Every field the plan reads from the source exists there (a transform's writes are produced)."""
    produced: set[str] = set()
    for ref in result.transforms:
        t = kit.deps.transforms.get(ref)
        produced |= t.writes if t is not None else frozenset()
    # a relationship read at the source (``@companies``) is no field of its schema
    missing = sorted(f for f in set(result.fields_read) - live - produced if not is_relationship(f))
    if missing:
        raise ConfigError(
            f"sync {ctx.spec.id!r} reads {missing} which {ctx.spec.source_stream} does not have at the "
            "source; fix the mapping"
        )


def _check_types(
    kit: ActivityKit,
    ctx: SyncContext,
    run_id: str,
    result: CheckResult,
    live: dict[str, str],
    earlier: tuple[str, dict[str, str]] | None,
) -> dict[str, str]:
    """The field types this run accepts (the module docstring's rule 3): those accepted ``earlier``
    under the same instruction (hash, types), plus the live types of fields read for the first time."""
    accepted = earlier[1] if earlier and earlier[0] == ctx.instruction.content_hash else {}
    read = {f: live[f] for f in result.fields_read if f in live}
    mine = {f: accepted[f] for f in read if f in accepted}
    try:
        check_types(ctx.instruction, ctx.spec.source_stream, mine, live)
    except PlanRefused as exc:
        kit.refuse(ctx, run_id, exc, exc.reason)
        raise
    return {**accepted, **read}


def _check_route(kit: ActivityKit, ctx: SyncContext, run_id: str) -> None:
    """The transfer rule of the module docstring; refusals are recorded, then raised."""
    home = ctx.home
    instruction = ctx.instruction
    held = ctx.registry_held_by
    if held is not None and held.choice is ObjectionChoice.STOP:
        # The controller's objection withdraws the authorisation: processing would be outside its instruction.
        stopped = PurposeViolation(
            f"tenant {ctx.tenant.id!r} objected to subprocessor registry version {held.version} and "
            f"chose that its syncs stop; they stay refused while the objection stands",
            code="subprocessor_objection",
        )
        kit.refuse(
            ctx, run_id, stopped,
            {"rule": "subprocessor_objection", "objected_version": held.version,
             "registry_version": ctx.registry_version},
        )  # fmt: skip
        raise stopped
    try:
        src, dst = ctx.source_endpoint(), ctx.destination_endpoint()
        outside = sorted(
            {r for r in (src.region, home, dst.region) if r not in instruction.permitted_regions}
        )
        if outside:
            raise TransferNotPermitted(
                f"instruction v{instruction.version} permits processing in "
                f"{list(instruction.permitted_regions)} only; this sync would process data in {outside}",
                code="region_not_instructed",
            )
        registry = ctx.registry
        registry.check_authorised(ctx.tenant.id, src.subprocessor)
        registry.check_transfer(home, src.region, home, registry.processor.id, tenant=ctx.tenant.id)
        registry.check_transfer(home, home, dst.region, dst.subprocessor, tenant=ctx.tenant.id)
        for infra in registry.infrastructure:  # hosting, database, Temporal: in the home region
            registry.check_transfer(home, home, home, infra.id)
    except TransferNotPermitted as exc:
        kit.refuse(ctx, run_id, exc, {"rule": "transfer", **_route_reason(ctx)})
        raise
    except PolicyError as exc:  # unknown endpoint, unauthorised subprocessor, …: the move is not permitted
        refused = TransferNotPermitted(exc.message, code=exc.code)
        kit.refuse(ctx, run_id, refused, {"rule": "transfer", **_route_reason(ctx)})
        raise refused from None
    not_instructed = sorted({src.subprocessor, dst.subprocessor} - set(instruction.permitted_subprocessors))
    if not_instructed:
        violation = PurposeViolation(
            f"instruction v{instruction.version} does not permit subprocessors {not_instructed}",
            code="purpose_violation.subprocessor",
        )
        kit.refuse(ctx, run_id, violation, {"rule": "subprocessor", "subprocessors": not_instructed})
        raise violation


def _route_reason(ctx: SyncContext) -> dict[str, Any]:
    reason: dict[str, Any] = {"home_region": ctx.home}
    for side, get in (("source", ctx.source_endpoint), ("destination", ctx.destination_endpoint)):
        try:
            e = get()
            reason[f"{side}_region"], reason[f"{side}_subprocessor"] = e.region, e.subprocessor
        except PolicyError:
            reason[f"{side}_region"] = None
    return reason
