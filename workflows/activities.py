"""The sync activities: plan, pull (project → pseudonymize → transform → seal → stage), push (map →
upsert → dead-letter → propagate deletes), finish, discard. DESIGN.md §1 is the walk they implement.

Only references cross Temporal (:mod:`schemas.sync`); records live sealed in ``staging_batches``
between pull and push. Every activity catches crmhub errors at its boundary and raises the
:func:`~workflows.errors.to_application_error` mapping; anything else becomes a retryable error
whose message names only the exception type (it could quote record data).

Resuming after a retry (heartbeat details)::

    pull_batch   after each staged part: PullProgress(state after that part, staged parts, counts)
                 retry → delete parts staged after the last heartbeat, read on from its state;
                 after lineage is appended: finished=True → a retry returns the same BatchRef
    push_batch   after each written part: PushProgress(parts done, counts)
                 retry → skip done parts (upserts are idempotent anyway; dead-letter ids are
                 deterministic, so a rewritten part records its failures once);
                 after lineage is appended: finished=True → a retry only deletes the staging

Lineage is appended once per activity, after the data work, so the events describe what happened.
A worker that dies hard between appending and its next heartbeat being recorded can make a retry
append the same batch's events again (at-least-once); nothing else is repeated.

Staged part format: vault ``seal_batch`` of compact JSON ``{"v": 1, "keys": [kh_…], "records":
[…]}`` with AAD ``(tenant, sync, "<batch>/<part>", purpose)``; deleted source ids as keyed hashes
sealed the same way under ``"<batch>/<part>/deleted"``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.engine import Connection
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from connectors.base import Connector
from governance.lineage import Ledger
from governance.policy import (
    CheckResult,
    PlanRefused,
    ProcessingInstruction,
    SyncPlan,
    Transform,
    apply_transforms,
    check,
    project,
)
from governance.registry import Endpoint, Registry, TenantResidency
from governance.vault import key_version_of
from schemas.connector import (
    OutcomeStatus,
    ReadMode,
    Record,
    RecordOutcome,
    StreamSpec,
    StreamState,
    WriteMode,
    WriteResult,
)
from schemas.errors import (
    ConfigError,
    CrmhubError,
    DataError,
    IntegrityError,
    PolicyError,
    PurposeViolation,
    TransferNotPermitted,
)
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from schemas.sync import (
    BatchRef,
    FinishInput,
    PlanInput,
    PullInput,
    PushInput,
    PushResult,
    SyncMode,
    SyncPlanRef,
    SyncStatus,
)
from store import connections as connection_store
from store import syncs as store
from store.connections import ConnectionRow
from workflows.deps import ActivityDeps
from workflows.errors import to_application_error, unexpected_error

__all__ = [
    "PAGE_SIZE",
    "PART_RECORDS",
    "PullProgress",
    "PushProgress",
    "SyncActivities",
]

PAGE_SIZE = 2000
"""Records asked for per ``read_page`` (connectors cap it at their vendor's page size)."""
PART_RECORDS = 2000
"""Records per sealed staging part: the unit of resumption for pull and push."""

_BLOB_VERSION = 1
_STAGING = "crmhub://staging"
_P = TypeVar("_P", bound=BaseModel)
_T = TypeVar("_T")


class PullProgress(BaseModel):
    """Heartbeat details of ``pull_batch``: everything before ``state`` is staged in ``parts``."""

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
    finished: bool = False

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
    calls: int = 0
    finished: bool = False

    def result(self) -> PushResult:
        return PushResult(
            batch_id=self.batch_id,
            pushed=self.created + self.updated,
            created=self.created,
            updated=self.updated,
            failed=self.failed,
            calls=self.calls,
        )


@dataclass(frozen=True, slots=True)
class _Context:
    """What one activity call knows about its sync, loaded from the store and checked."""

    tenant: store.TenantRow
    sync: store.SyncRow
    instruction: ProcessingInstruction
    registry: Registry  # the deployment registry with this tenant's residency from the store
    source: ConnectionRow
    destination: ConnectionRow

    @property
    def spec(self) -> store.SyncSpec:
        return self.sync.spec

    def sync_plan(self, when: datetime) -> SyncPlan:
        mapping = dict(self.spec.mapping)
        mapping.setdefault(self.spec.source_key_property, self.spec.destination_id_property)
        return SyncPlan(
            tenant=self.tenant.id,
            source_object=self.spec.source_stream,
            destination_object=self.spec.destination_stream,
            field_mapping=mapping,
            transforms=self.spec.transforms,
            purpose=self.instruction.purpose,
            when=when,
            instruction_version=self.spec.instruction_version,
        )

    def source_endpoint(self) -> Endpoint:
        return _endpoint(self.registry, self.source, self.spec.source_endpoint)

    def destination_endpoint(self) -> Endpoint:
        return _endpoint(self.registry, self.destination, self.spec.destination_endpoint)

    def source_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=_namespace(self.source), name=self.spec.source_stream)

    def destination_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=_namespace(self.destination), name=self.spec.destination_stream)

    def staging_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=_STAGING, name=self.spec.id)


@dataclass
class _Part:
    """Records and deleted keys gathered for one staging part."""

    keys: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.deleted)


def _namespace(row: ConnectionRow) -> str:
    netloc = urlsplit(row.instance_url).netloc if row.instance_url else ""
    return f"{row.provider}://{netloc}" if netloc else row.provider


def _endpoint(registry: Registry, row: ConnectionRow, instance: str | None) -> Endpoint:
    """The registry endpoint of a connection: the sync's named instance, else the one whose host is
    the connection's host; :class:`PolicyError` (``unknown_endpoint``) when neither is registered."""
    if instance:
        return registry.endpoint(row.provider, instance)
    host = urlsplit(row.instance_url).hostname if row.instance_url else None
    for e in registry.endpoints:
        if e.connector == row.provider and host and e.host == host:
            return e
    raise PolicyError(
        f"the {row.provider} connection {row.id} has no registered region: name its endpoint instance "
        "on the sync (source_endpoint / destination_endpoint, e.g. eu, eu1, na1)",
        code="unknown_endpoint",
    )


def _with_tenant(registry: Registry, tenant: store.TenantRow) -> Registry:
    """The registry with the tenant's residency (home region, authorisations) taken from the store."""
    residency = TenantResidency(
        tenant=tenant.id,
        home_region=tenant.home_region,
        authorised_subprocessors=tenant.authorised_subprocessors,
    )
    data = registry.model_dump(by_alias=True)
    data["tenants"] = [
        *(t for t in data["tenants"] if t["tenant"] != tenant.id),
        residency.model_dump(),
    ]
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors(include_input=False, include_url=False))
        raise ConfigError(
            f"tenant {tenant.id!r} does not fit the subprocessor registry: {problems}"
        ) from None


def _detail(value: Any) -> str | int | bool | None:
    """A lineage detail value (str/int/bool/None) from a refusal reason value."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    return json.dumps(value, sort_keys=True, default=str)


def _json_default(value: object) -> Any:
    raise DataError(f"a field value of type {type(value).__name__} cannot be staged (JSON types only)")


def _encode_part(keys: Sequence[str], records: Sequence[Record]) -> bytes:
    body = {"v": _BLOB_VERSION, "keys": list(keys), "records": list(records)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()


def _decode_part(blob: bytes) -> tuple[list[str], list[Record]]:
    body = json.loads(blob)
    if not isinstance(body, dict) or body.get("v") != _BLOB_VERSION:
        raise IntegrityError("staged part has an unknown format version")
    keys, records = body["keys"], body["records"]
    if len(keys) != len(records):
        raise IntegrityError("staged part is inconsistent (keys and records differ in number)")
    return keys, records


def _dead_letter_id(tenant: str, sync_id: str, batch_id: str, part: int, kind: str, index: int) -> str:
    raw = f"{tenant}\x1f{sync_id}\x1f{batch_id}\x1f{part}\x1f{kind}\x1f{index}".encode()
    return hashlib.sha256(raw).hexdigest()[:40]


def _redact(message: str | None, record: Record) -> str:
    """A vendor message with every value of ``record`` cut out (vendors quote the bad value)."""
    if not message:
        return ""
    out = " ".join(message.split())[:300]
    for value in record.values():
        text = str(value) if value is not None else ""
        if len(text) >= 3 and text in out:
            out = out.replace(text, "[redacted]")
    if "@" in out:  # anything e-mail-like that was not literally a record value (normalised forms)
        out = " ".join("[redacted]" if "@" in word else word for word in out.split(" "))
    return out


def _resume(model: type[_P], batch_id: str) -> _P | None:
    """The heartbeat details of a previous attempt at the same batch, if any."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        progress = model.model_validate(details[0])
    except ValidationError:
        activity.logger.warning("ignoring unreadable heartbeat details; starting the batch over")
        return None
    return progress if getattr(progress, "batch_id", None) == batch_id else None


class SyncActivities:
    """The activities of :class:`~workflows.sync.SyncWorkflow`, bound to injected dependencies.

    One instance serves every activity thread of a worker; it keeps no per-run state (a run's state
    is in the workflow, the store and heartbeat details).
    """

    def __init__(
        self, deps: ActivityDeps, *, page_size: int = PAGE_SIZE, part_records: int = PART_RECORDS
    ) -> None:
        if page_size < 1 or part_records < 1:
            raise ConfigError("page_size and part_records must be at least 1")
        self.deps = deps
        self.page_size = page_size
        self.part_records = part_records
        self._lock = threading.Lock()
        self._ledgers: dict[str, Ledger] = {}
        self._stream_specs: dict[tuple[str, str], StreamSpec] = {}

    # ---- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _guarded(name: str, run: Callable[[], _T]) -> _T:
        """Run an activity body, mapping errors that leave it (see :mod:`workflows.errors`)."""
        try:
            return run()
        except (ApplicationError, CancelledError):
            raise
        except CrmhubError as exc:
            raise to_application_error(exc) from None
        except Exception as exc:
            raise unexpected_error(exc, name) from None

    def ledger(self, tenant: str) -> Ledger:
        """The tenant's ledger (cached: it keeps the Merkle tree for checkpoints)."""
        with self._lock:
            ledger = self._ledgers.get(tenant)
            if ledger is None:
                ledger = self._ledgers[tenant] = Ledger(self.deps.engine, tenant)
            return ledger

    def _stream_spec(self, connector: Connector, connection_id: str, stream: str) -> StreamSpec:
        key = (connection_id, stream)
        with self._lock:
            cached = self._stream_specs.get(key)
        if cached is not None:
            return cached
        for spec in connector.streams():
            if spec.name == stream:
                with self._lock:
                    self._stream_specs[key] = spec
                return spec
        raise ConfigError(f"the {connector.name} connection has no stream {stream!r}")

    def _context(self, tenant_id: str, sync_id: str, *, instruction_hash: str | None = None) -> _Context:
        with self.deps.engine.connect() as conn:
            tenant = store.get_tenant(conn, tenant_id)
            if tenant is None:
                raise ConfigError(f"unknown tenant {tenant_id!r}")
            sync = store.get_sync(conn, tenant_id, sync_id)
            if sync is None:
                raise ConfigError(f"tenant {tenant_id!r} has no sync {sync_id!r}")
            row = store.get_instruction(conn, tenant_id, sync.spec.instruction_version)
            if row is None:
                raise ConfigError(
                    f"sync {sync_id!r} cites instruction v{sync.spec.instruction_version}, which tenant "
                    f"{tenant_id!r} has not stored"
                )
            source = self._connection(conn, tenant_id, sync.spec.source_connection_id)
            destination = self._connection(conn, tenant_id, sync.spec.destination_connection_id)
        try:
            instruction = ProcessingInstruction.model_validate(row.content)
        except ValidationError:
            raise IntegrityError(
                f"stored instruction v{row.version} of tenant {tenant_id!r} no longer validates"
            ) from None
        if instruction.content_hash != row.content_hash or instruction.tenant != tenant_id:
            raise IntegrityError(f"stored instruction v{row.version} of tenant {tenant_id!r} was altered")
        if instruction_hash is not None and instruction.content_hash != instruction_hash:
            raise IntegrityError(
                f"instruction v{row.version} differs from the one this run was planned under; plan again"
            )
        registry = _with_tenant(self.deps.subprocessors, tenant)
        return _Context(tenant, sync, instruction, registry, source, destination)

    @staticmethod
    def _connection(conn: Connection, tenant: str, connection_id: str) -> ConnectionRow:
        row = connection_store.get_connection(conn, connection_id)
        if row is None or row.tenant != tenant:
            raise ConfigError(f"tenant {tenant!r} has no connection {connection_id!r}")
        return row

    def _append(self, tenant: str, events: Sequence[LineageEvent]) -> None:
        self.ledger(tenant).append(events)

    def _event(self, ctx: _Context, run_id: str, kind: EventKind, **fields: Any) -> LineageEvent:
        return LineageEvent(
            kind=kind,
            tenant=ctx.tenant.id,
            run_id=run_id,
            sync_id=ctx.spec.id,
            instruction_version=ctx.instruction.version,
            instruction_hash=ctx.instruction.content_hash,
            purpose=ctx.instruction.purpose,
            timestamp=self.deps.clock(),
            **fields,
        )

    def _refuse(self, ctx: _Context, run_id: str, exc: PolicyError, reason: dict[str, Any]) -> None:
        """Record a refusal: lineage event, run and sync status (nothing about records)."""
        details = {str(k): _detail(v) for k, v in reason.items()}
        details["error"] = type(exc).__name__
        details["code"] = exc.code
        event = self._event(
            ctx,
            run_id,
            EventKind.REFUSAL,
            source=ctx.source_dataset(),
            destination=ctx.destination_dataset(),
            details=details,
        )
        self._append(ctx.tenant.id, [event])
        now = self.deps.clock()
        with self.deps.engine.begin() as conn:
            if store.get_run(conn, run_id) is None:
                store.start_run(
                    conn,
                    run_id=run_id,
                    tenant=ctx.tenant.id,
                    sync_id=ctx.spec.id,
                    mode="-",
                    trigger="-",
                    status=SyncStatus.REFUSED.value,
                    now=now,
                )
            store.finish_run(
                conn, run_id, status=SyncStatus.REFUSED.value, counts={}, message=exc.message, now=now
            )
            store.set_sync_status(conn, ctx.tenant.id, ctx.spec.id, SyncStatus.REFUSED.value, now=now)
        activity.logger.warning("run %s refused: %s", run_id, exc.code)

    # ---- plan -----------------------------------------------------------------------------------

    @activity.defn(name="plan_sync")
    def plan_sync(self, inp: PlanInput) -> SyncPlanRef:
        """Check the run against the processing instruction and the transfer rules and return its plan.

        Refusals (a mapping or transform outside the instruction, a region or subprocessor the
        instruction or the registry does not permit) are recorded as a ``refusal`` lineage event and
        a refused run, and raised non-retryable (``PurposeViolation`` / ``TransferNotPermitted``).
        """
        return self._guarded("plan_sync", lambda: self._plan(inp))

    def _plan(self, inp: PlanInput) -> SyncPlanRef:
        now = self.deps.clock()
        settings = self.deps.settings
        ctx = self._context(inp.tenant, inp.sync_id)
        region = settings.region_for(ctx.tenant.home_region)
        task_queue = settings.task_queue(region)
        requested = inp.mode or (SyncMode(ctx.spec.default_mode) if ctx.spec.default_mode else None)
        cursor = ctx.sync.cursor
        mode = SyncMode.FULL if requested is SyncMode.FULL or cursor is None else SyncMode.INCREMENTAL
        if mode is SyncMode.FULL or cursor is None:
            start_state = StreamState(mode=ReadMode.FULL)
        else:
            start_state = cursor.model_copy(update={"mode": ReadMode.INCREMENTAL, "page_token": None})

        connector = self.deps.connector_factory(ctx.spec.source_connection_id)
        try:
            live = connector.describe(ctx.spec.source_stream)
        finally:
            connector.close()
        try:
            result = check(
                ctx.sync_plan(now),
                ctx.instruction,
                at=now,
                source_fields=live.names(),
                registry=self.deps.transforms,
            )
        except PlanRefused as exc:
            self._refuse(ctx, inp.run_id, exc, exc.reason)
            raise
        self._check_fields_exist(ctx, result, live.names())
        self._check_route(ctx, inp.run_id)

        with self.deps.engine.begin() as conn:
            store.start_run(
                conn,
                run_id=inp.run_id,
                tenant=ctx.tenant.id,
                sync_id=ctx.spec.id,
                mode=mode.value,
                trigger="workflow",
                status=SyncStatus.RUNNING.value,
                now=now,
            )
            store.set_sync_status(
                conn, ctx.tenant.id, ctx.spec.id, SyncStatus.RUNNING.value, now=now, last_run_id=inp.run_id
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
            pages_per_activity=worker.pages_per_activity,
            activity_time_budget_s=worker.activity_time_budget_s,
            continue_as_new_after_batches=worker.continue_as_new_after_batches,
        )

    def _check_fields_exist(self, ctx: _Context, result: CheckResult, live: set[str]) -> None:
        """Every field the plan reads from the source exists there (fields a transform writes are
        produced, not read)."""
        produced: set[str] = set()
        for ref in result.transforms:
            t = self.deps.transforms.get(ref)
            produced |= t.writes if t is not None else frozenset()
        missing = sorted(set(result.fields_read) - live - produced)
        if missing:
            raise ConfigError(
                f"sync {ctx.spec.id!r} reads {missing} which {ctx.spec.source_stream} does not have at "
                "the source; fix the mapping"
            )

    def _check_route(self, ctx: _Context, run_id: str) -> None:
        """The transfer rule: source endpoint → crmhub in the tenant's home region → destination
        endpoint, each permitted by the instruction (regions, subprocessors) and by the registry."""
        home = ctx.tenant.home_region
        instruction = ctx.instruction
        try:
            src, dst = ctx.source_endpoint(), ctx.destination_endpoint()
            regions = {"source": src.region, "processing": home, "destination": dst.region}
            outside = sorted({r for r in regions.values() if r not in instruction.permitted_regions})
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
        except TransferNotPermitted as exc:
            self._refuse(ctx, run_id, exc, {"rule": "transfer", **self._route_reason(ctx)})
            raise
        except PolicyError as exc:
            refused = TransferNotPermitted(exc.message, code=exc.code)
            self._refuse(ctx, run_id, refused, {"rule": "transfer", **self._route_reason(ctx)})
            raise refused from None
        not_instructed = sorted(
            {s.subprocessor for s in (src, dst)} - set(instruction.permitted_subprocessors)
        )
        if not_instructed:
            violation = PurposeViolation(
                f"instruction v{instruction.version} does not permit subprocessors {not_instructed}",
                code="purpose_violation.subprocessor",
            )
            self._refuse(ctx, run_id, violation, {"rule": "subprocessor", "subprocessors": not_instructed})
            raise violation

    @staticmethod
    def _route_reason(ctx: _Context) -> dict[str, Any]:
        reason: dict[str, Any] = {"home_region": ctx.tenant.home_region}
        for side, get in (("source", ctx.source_endpoint), ("destination", ctx.destination_endpoint)):
            try:
                e = get()
                reason[f"{side}_region"], reason[f"{side}_subprocessor"] = e.region, e.subprocessor
            except PolicyError:
                reason[f"{side}_region"] = None
        return reason

    # ---- pull -----------------------------------------------------------------------------------

    @activity.defn(name="pull_batch")
    def pull_batch(self, inp: PullInput) -> BatchRef:
        """Read up to ``max_pages`` / ``max_records`` / ``time_budget_s`` of source pages, keep only
        what the instruction allows (pseudonymized, transformed), seal and stage it, and return the
        BatchRef. ``records=0`` and ``deleted=0``: nothing was staged. Heartbeats its cursor."""
        return self._guarded("pull_batch", lambda: self._pull(inp))

    def _pull(self, inp: PullInput) -> BatchRef:
        plan = inp.plan
        ctx = self._context(plan.tenant, plan.sync_id, instruction_hash=plan.instruction_hash)
        now = self.deps.clock()
        tenant = ctx.tenant.id
        batch_id = f"{plan.run_id}.{inp.batch_seq:06d}"
        progress = _resume(PullProgress, batch_id)
        if progress is not None and progress.finished:
            return progress.ref(inp.batch_seq)
        try:  # the instruction may have expired since the plan, or its transforms changed
            checked = check(ctx.sync_plan(now), ctx.instruction, at=now, registry=self.deps.transforms)
        except PlanRefused as exc:
            self._refuse(ctx, plan.run_id, exc, exc.reason)
            raise
        transforms: list[Transform] = []
        for ref in checked.transforms:
            t = self.deps.transforms.get(ref)
            if t is None:  # pragma: no cover - check() refused unknown transforms already
                raise ConfigError(f"transform {ref} is not registered")
            transforms.append(t)
        src = ctx.source_endpoint()
        home = ctx.tenant.home_region
        with self.deps.engine.begin() as conn:  # parts of an attempt that never heartbeated them
            store.delete_staged(conn, tenant, batch_id, keep=progress.parts if progress else [])
        if progress is None:
            progress = PullProgress(batch_id=batch_id, state=inp.state)
        all_keys: list[str] = []
        if progress.parts:  # hashes of parts staged by an earlier attempt, for the pull event
            all_keys = self._staged_keys(ctx, plan, batch_id)
        withheld = set(progress.withheld_fields)
        expires = now + timedelta(days=ctx.instruction.retention_days)
        store_events: list[LineageEvent] = []
        fields = sorted(checked.fields_read)
        keyed_hash = self.deps.pseudonymizer.keyed_hash
        started = time.monotonic()
        pages_now = records_now = 0
        part = _Part()
        state, has_more = progress.state, progress.has_more

        connector = self.deps.connector_factory(ctx.spec.source_connection_id)
        try:
            pk = self._stream_spec(
                connector, ctx.spec.source_connection_id, ctx.spec.source_stream
            ).primary_key
            while (
                has_more
                and pages_now < inp.max_pages
                and records_now < inp.max_records
                and time.monotonic() - started < inp.time_budget_s
            ):
                if activity.is_cancelled():
                    raise CancelledError("pull cancelled")
                page = connector.read_page(
                    ctx.spec.source_stream, state, min(self.page_size, inp.max_records - records_now), fields
                )
                keys = []
                for rec in page.records:
                    rid = rec.get(pk)
                    if rid is None or rid == "":
                        raise DataError(f"a {ctx.spec.source_stream} record came without its key {pk}")
                    keys.append(keyed_hash(tenant, str(rid)))
                projection = project(
                    page.records,
                    ctx.instruction,
                    ctx.spec.source_stream,
                    pseudonymizer=self.deps.pseudonymizer,
                )
                records = apply_transforms(projection.records, transforms)
                part.keys += keys
                part.records += records
                part.deleted += [keyed_hash(tenant, str(d)) for d in page.deleted_ids]
                withheld.update(projection.withheld_fields)
                state, has_more = page.next_state, page.has_more
                pages_now += 1
                records_now += len(records)
                progress = progress.model_copy(
                    update={
                        "pages": progress.pages + 1,
                        "calls": progress.calls + page.calls,
                        "withheld_values": progress.withheld_values + projection.withheld_values,
                        "pseudonymized": progress.pseudonymized + sum(projection.pseudonymized.values()),
                    }
                )
                if len(part.records) >= self.part_records or len(part.deleted) >= self.part_records:
                    progress, event = self._stage(ctx, plan, inp.batch_seq, progress, part, expires, state)
                    progress = progress.model_copy(
                        update={"has_more": has_more, "withheld_fields": sorted(withheld)}
                    )
                    store_events.append(event)
                    all_keys += part.keys
                    part = _Part()
                # Liveness, and the resume point of the last staged part (never of unstaged pages).
                activity.heartbeat(progress)
            if part:
                progress, event = self._stage(ctx, plan, inp.batch_seq, progress, part, expires, state)
                store_events.append(event)
                all_keys += part.keys
            # Nothing left unstaged: the batch ends at the last page read.
            progress = progress.model_copy(
                update={"state": state, "has_more": has_more, "withheld_fields": sorted(withheld)}
            )
            activity.heartbeat(progress)
        finally:
            connector.close()

        if progress.records or progress.deleted:
            events = [
                self._event(
                    ctx,
                    plan.run_id,
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
                    record_id_hashes=tuple(all_keys),
                    subprocessor=src.subprocessor,
                    region_from=src.region,
                    region_to=home,
                    details={
                        "batch_id": batch_id,
                        "withheld": ",".join(progress.withheld_fields),
                        "pseudonymized_fields": ",".join(checked.pseudonymized_fields),
                    },
                )
            ]
            transfer = ctx.registry.transfer(
                tenant=tenant,
                run_id=plan.run_id,
                from_region=src.region,
                to_region=home,
                subprocessor=ctx.registry.processor.id,
                record_id_hashes=all_keys,
                sync_id=ctx.spec.id,
                purpose=ctx.instruction.purpose,
                instruction_version=ctx.instruction.version,
                instruction_hash=ctx.instruction.content_hash,
                source=ctx.source_dataset(),
                destination=ctx.staging_dataset(),
                timestamp=self.deps.clock(),
            )
            if transfer is not None:
                events.append(transfer)
            if transforms:
                events.append(
                    self._event(
                        ctx,
                        plan.run_id,
                        EventKind.TRANSFORM,
                        source=ctx.staging_dataset(),
                        destination=ctx.staging_dataset(),
                        counts={"records": progress.records},
                        details={"batch_id": batch_id, "transforms": ",".join(t.ref for t in transforms)},
                    )
                )
            # Store events of parts staged by an earlier attempt were not appended (the attempt did
            # not reach this point): describe them from the store.
            events += self._earlier_store_events(ctx, plan, batch_id, store_events)
            self._append(tenant, events)
        progress = progress.model_copy(update={"finished": True})
        activity.heartbeat(progress)
        return progress.ref(inp.batch_seq)

    def _stage(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        seq: int,
        progress: PullProgress,
        part: _Part,
        expires: datetime,
        state: StreamState,
    ) -> tuple[PullProgress, LineageEvent]:
        """Seal and store one part; returns the progress to heartbeat and its ``store`` event."""
        vault = self.deps.vault
        tenant, batch_id = ctx.tenant.id, progress.batch_id
        number = max(progress.parts, default=-1) + 1
        name = f"{batch_id}/{number}"
        sealed = vault.seal_batch(
            tenant,
            _encode_part(part.keys, part.records),
            sync=ctx.spec.id,
            batch=name,
            purpose=ctx.instruction.purpose,
        )
        sealed_deleted = None
        if part.deleted:
            sealed_deleted = vault.seal_batch(
                tenant,
                json.dumps(part.deleted, separators=(",", ":")).encode(),
                sync=ctx.spec.id,
                batch=f"{name}/deleted",
                purpose=ctx.instruction.purpose,
            )
        now = self.deps.clock()
        with self.deps.engine.begin() as conn:
            store.put_staged(
                conn,
                store.StagedPart(
                    batch_id=batch_id,
                    part=number,
                    tenant=tenant,
                    sync_id=ctx.spec.id,
                    run_id=plan.run_id,
                    seq=seq,
                    sealed=sealed,
                    records=len(part.records),
                    deleted=len(part.deleted),
                    deleted_keys=sealed_deleted,
                    created=now,
                    expires_at=expires,
                ),
            )
        event = self._store_event(
            ctx, plan, batch_id, number, len(part.records), len(part.deleted), sealed, expires
        )
        progress = progress.model_copy(
            update={
                "state": state,
                "parts": [*progress.parts, number],
                "records": progress.records + len(part.records),
                "deleted": progress.deleted + len(part.deleted),
            }
        )
        return progress, event

    def _store_event(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        batch_id: str,
        part: int,
        records: int,
        deleted: int,
        sealed: bytes,
        expires: datetime,
    ) -> LineageEvent:
        return self._event(
            ctx,
            plan.run_id,
            EventKind.STORE,
            source=ctx.source_dataset(),
            destination=ctx.staging_dataset(),
            counts={"records": records, "deleted": deleted, "bytes": len(sealed)},
            subprocessor=ctx.registry.processor.id,
            region_to=ctx.tenant.home_region,
            details={
                "batch_id": batch_id,
                "part": part,
                "sealed": True,
                "key_version": key_version_of(sealed),
                "expires_at": expires.isoformat(),
            },
        )

    def _earlier_store_events(
        self, ctx: _Context, plan: SyncPlanRef, batch_id: str, now_staged: list[LineageEvent]
    ) -> list[LineageEvent]:
        mine = {e.details.get("part") for e in now_staged}
        with self.deps.engine.connect() as conn:
            parts = store.get_staged(conn, ctx.tenant.id, batch_id)
        earlier = [
            self._store_event(ctx, plan, batch_id, p.part, p.records, p.deleted, p.sealed, p.expires_at)
            for p in parts
            if p.part not in mine
        ]
        return [*earlier, *now_staged]

    def _open_part(self, ctx: _Context, part: store.StagedPart) -> tuple[list[str], list[Record], list[str]]:
        """Keys, records and deleted keys of one staged part."""
        name = f"{part.batch_id}/{part.part}"
        purpose = ctx.instruction.purpose
        blob = self.deps.vault.open_batch(
            ctx.tenant.id, part.sealed, sync=ctx.spec.id, batch=name, purpose=purpose
        )
        keys, records = _decode_part(blob)
        deleted: list[str] = []
        if part.deleted_keys is not None:
            raw = self.deps.vault.open_batch(
                ctx.tenant.id, part.deleted_keys, sync=ctx.spec.id, batch=f"{name}/deleted", purpose=purpose
            )
            deleted = list(json.loads(raw))
        return keys, records, deleted

    def _staged_keys(self, ctx: _Context, plan: SyncPlanRef, batch_id: str) -> list[str]:
        with self.deps.engine.connect() as conn:
            parts = store.get_staged(conn, ctx.tenant.id, batch_id)
        keys: list[str] = []
        for p in parts:
            keys += self._open_part(ctx, p)[0]
        return keys

    # ---- push -----------------------------------------------------------------------------------

    @activity.defn(name="push_batch")
    def push_batch(self, inp: PushInput) -> PushResult:
        """Upsert a staged batch into the destination by its id property (idempotent: a retried push
        duplicates nothing), dead-letter refused records with the vendor's code, propagate staged
        deletes through the id map, record lineage, then delete the staged batch. Heartbeats the
        parts done so a retry skips them."""
        return self._guarded("push_batch", lambda: self._push(inp))

    def _push(self, inp: PushInput) -> PushResult:
        plan, batch = inp.plan, inp.batch
        if batch.records == 0 and batch.deleted == 0:
            return PushResult(batch_id=batch.batch_id, pushed=0)
        ctx = self._context(plan.tenant, plan.sync_id, instruction_hash=plan.instruction_hash)
        tenant = ctx.tenant.id
        progress = _resume(PushProgress, batch.batch_id)
        if progress is not None and progress.finished:
            self._delete_staging(tenant, batch.batch_id)
            return progress.result()
        with self.deps.engine.connect() as conn:
            parts = store.staged_parts(conn, tenant, batch.batch_id)
        if not parts:
            return self._already_pushed(ctx, plan, batch)
        progress = progress or PushProgress(batch_id=batch.batch_id)
        done_before = set(progress.done_parts)

        # Fail closed before anything leaves: the move to the destination's region must be permitted.
        home = ctx.tenant.home_region
        dst = ctx.destination_endpoint()
        ctx.registry.check_transfer(home, home, dst.region, dst.subprocessor, tenant=tenant)

        pushed_keys: list[str] = []
        deleted_keys: list[str] = []
        connector = self.deps.connector_factory(ctx.spec.destination_connection_id)
        try:
            spec = self._stream_spec(
                connector, ctx.spec.destination_connection_id, ctx.spec.destination_stream
            )
            for number in parts:
                if number in done_before:
                    continue
                with self.deps.engine.connect() as conn:
                    (part,) = store.get_staged(conn, tenant, batch.batch_id, part=number)
                keys, records, deleted = self._open_part(ctx, part)
                if activity.is_cancelled():
                    raise CancelledError("push cancelled")
                progress, ok_keys = self._push_part(ctx, plan, connector, part, keys, records, progress)
                pushed_keys += ok_keys
                progress, gone = self._delete_part(ctx, plan, connector, spec, part, deleted, progress)
                deleted_keys += gone
                progress = progress.model_copy(update={"done_parts": [*progress.done_parts, number]})
                activity.heartbeat(progress)
        finally:
            connector.close()
        if done_before:
            pushed_keys = self._pushed_keys(ctx, batch.batch_id, done_before) + pushed_keys
        self._append(
            tenant, self._push_events(ctx, plan, batch.batch_id, progress, pushed_keys, deleted_keys)
        )
        progress = progress.model_copy(update={"finished": True})
        activity.heartbeat(progress)
        self._delete_staging(tenant, batch.batch_id)
        return progress.result()

    def _push_part(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        connector: Connector,
        part: store.StagedPart,
        keys: list[str],
        records: list[Record],
        progress: PushProgress,
    ) -> tuple[PushProgress, list[str]]:
        """Upsert one part; returns the progress and the keys the destination accepted."""
        spec = ctx.spec
        mapped: list[Record] = []
        positions: list[int] = []
        local_failures: list[tuple[int, str]] = []
        for i, rec in enumerate(records):
            key = rec.get(spec.source_key_property)
            if key is None or (isinstance(key, str) and not key.strip()):
                local_failures.append((i, "MISSING_EXTERNAL_ID"))
                continue
            out = {dst: rec[src] for src, dst in spec.mapping.items() if src in rec}
            out[spec.destination_id_property] = key
            mapped.append(out)
            positions.append(i)
        result = WriteResult([], calls=0)
        if mapped:
            result = connector.write_batch(
                spec.destination_stream, mapped, WriteMode.UPSERT, external_id=spec.destination_id_property
            )
            if len(result.outcomes) != len(mapped):
                raise DataError(
                    f"the {connector.name} connector answered {len(result.outcomes)} outcomes for "
                    f"{len(mapped)} records (the contract is one per record)"
                )
        pairs: list[tuple[str, str]] = []
        letters: list[store.DeadLetter] = []
        created = updated = 0
        ok_keys: list[str] = []
        now = self.deps.clock()
        for i, code in local_failures:
            letters.append(self._letter(ctx, plan, part, "upsert", i, keys[i], records[i], code, None))
        for pos, outcome in zip(positions, result.outcomes, strict=True):
            if outcome.ok:
                if outcome.status is OutcomeStatus.CREATED:
                    created += 1
                else:
                    updated += 1
                ok_keys.append(keys[pos])
                if outcome.id:
                    pairs.append((keys[pos], outcome.id))
            else:
                letters.append(
                    self._letter(ctx, plan, part, "upsert", pos, keys[pos], records[pos], *_why(outcome))
                )
        with self.deps.engine.begin() as conn:
            store.upsert_id_map(conn, ctx.tenant.id, spec.id, pairs, now=now)
            store.add_dead_letters(conn, letters)
        progress = progress.model_copy(
            update={
                "created": progress.created + created,
                "updated": progress.updated + updated,
                "failed": progress.failed + len(letters),
                "calls": progress.calls + result.calls,
            }
        )
        return progress, ok_keys

    def _delete_part(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        connector: Connector,
        spec: StreamSpec,
        part: store.StagedPart,
        deleted: list[str],
        progress: PushProgress,
    ) -> tuple[PushProgress, list[str]]:
        """Propagate one part's source deletes through the id map; returns progress and deleted keys."""
        if not deleted:
            return progress, []
        tenant, sync_id = ctx.tenant.id, ctx.spec.id
        with self.deps.engine.connect() as conn:
            found = store.lookup_id_map(conn, tenant, sync_id, deleted)
        targets = [(i, k, found[k]) for i, k in enumerate(deleted) if k in found]
        unmapped = len(deleted) - len(targets)
        letters: list[store.DeadLetter] = []
        gone: list[str] = []
        calls = 0
        if targets and not spec.supports_deletes:
            for i, k, dest_id in targets:
                letters.append(
                    self._letter(
                        ctx,
                        plan,
                        part,
                        "delete",
                        i,
                        k,
                        {"destination_id": dest_id},
                        "DELETE_NOT_SUPPORTED",
                        f"{connector.name} stream {spec.name} does not support deletes",
                    )
                )
        elif targets:
            result = connector.write_batch(
                spec.name,
                [{spec.primary_key: dest_id} for _, _, dest_id in targets],
                WriteMode.DELETE,
                external_id=spec.primary_key,
            )
            calls = result.calls
            if len(result.outcomes) != len(targets):
                raise DataError(
                    f"the {connector.name} connector answered the wrong number of delete outcomes"
                )
            for (i, k, dest_id), outcome in zip(targets, result.outcomes, strict=True):
                if outcome.ok:
                    gone.append(k)
                else:
                    letters.append(
                        self._letter(
                            ctx, plan, part, "delete", i, k, {"destination_id": dest_id}, *_why(outcome)
                        )
                    )
        with self.deps.engine.begin() as conn:
            store.delete_id_map(conn, tenant, sync_id, gone)
            store.add_dead_letters(conn, letters)
        progress = progress.model_copy(
            update={
                "deletes_propagated": progress.deletes_propagated + len(gone),
                "deletes_failed": progress.deletes_failed + len(letters),
                "deletes_unmapped": progress.deletes_unmapped + unmapped,
                "calls": progress.calls + calls,
            }
        )
        return progress, gone

    def _letter(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        part: store.StagedPart,
        kind: str,
        index: int,
        key: str,
        record: Record,
        code: str,
        vendor_message: str | None,
    ) -> store.DeadLetter:
        """A dead letter: the record sealed (with the vendor's message), code and redacted message."""
        tenant, sync_id = ctx.tenant.id, ctx.spec.id
        letter_id = _dead_letter_id(tenant, sync_id, part.batch_id, part.part, kind, index)
        sealed = self.deps.vault.seal(
            tenant,
            json.dumps(
                {"record": record, "vendor_message": vendor_message, "kind": kind},
                separators=(",", ":"),
                ensure_ascii=False,
                default=str,
            ).encode(),
            dataset="dead-letter",
            object_id=letter_id,
            purpose=ctx.instruction.purpose,
        )
        shown = _redact(vendor_message, record)
        return store.DeadLetter(
            id=letter_id,
            tenant=tenant,
            sync_id=sync_id,
            run_id=plan.run_id,
            batch_id=part.batch_id,
            record_key_hash=key,
            sealed_record=sealed,
            error_code=code,
            error_message=f"{kind} refused: {code}" + (f" ({shown})" if shown else ""),
            created=self.deps.clock(),
        )

    def _pushed_keys(self, ctx: _Context, batch_id: str, parts: set[int]) -> list[str]:
        """Keys the destination accepted in ``parts`` written by an earlier attempt: their staged keys
        minus the batch's dead letters."""
        with self.deps.engine.connect() as conn:
            failed = store.dead_letter_key_hashes(conn, ctx.tenant.id, ctx.spec.id, batch_id)
            staged = store.get_staged(conn, ctx.tenant.id, batch_id)
        keys: list[str] = []
        for p in staged:
            if p.part in parts:
                keys += [k for k in self._open_part(ctx, p)[0] if k not in failed]
        return keys

    def _push_events(
        self,
        ctx: _Context,
        plan: SyncPlanRef,
        batch_id: str,
        progress: PushProgress,
        pushed_keys: list[str],
        deleted_keys: list[str],
    ) -> list[LineageEvent]:
        home = ctx.tenant.home_region
        dst = ctx.destination_endpoint()
        events = [
            self._event(
                ctx,
                plan.run_id,
                EventKind.PUSH,
                source=ctx.staging_dataset(),
                destination=ctx.destination_dataset(),
                counts={
                    "pushed": progress.created + progress.updated,
                    "created": progress.created,
                    "updated": progress.updated,
                    "failed": progress.failed,
                    "calls": progress.calls,
                },
                record_id_hashes=tuple(pushed_keys),
                subprocessor=dst.subprocessor,
                region_from=home,
                region_to=dst.region,
                details={"batch_id": batch_id},
            )
        ]
        transfer = ctx.registry.transfer(
            tenant=ctx.tenant.id,
            run_id=plan.run_id,
            from_region=home,
            to_region=dst.region,
            subprocessor=dst.subprocessor,
            record_id_hashes=[*pushed_keys, *deleted_keys],
            sync_id=ctx.spec.id,
            purpose=ctx.instruction.purpose,
            instruction_version=ctx.instruction.version,
            instruction_hash=ctx.instruction.content_hash,
            source=ctx.staging_dataset(),
            destination=ctx.destination_dataset(),
            timestamp=self.deps.clock(),
        )
        if transfer is not None:
            events.append(transfer)
        if progress.deletes_propagated or progress.deletes_failed or progress.deletes_unmapped:
            events.append(
                self._event(
                    ctx,
                    plan.run_id,
                    EventKind.DELETE,
                    source=ctx.source_dataset(),
                    destination=ctx.destination_dataset(),
                    counts={
                        "deleted": progress.deletes_propagated,
                        "failed": progress.deletes_failed,
                        "not_at_destination": progress.deletes_unmapped,
                    },
                    record_id_hashes=tuple(deleted_keys),
                    subprocessor=dst.subprocessor,
                    region_from=home,
                    region_to=dst.region,
                    details={"batch_id": batch_id},
                )
            )
        return events

    def _already_pushed(self, ctx: _Context, plan: SyncPlanRef, batch: BatchRef) -> PushResult:
        """No staged parts left: an earlier attempt pushed the batch (its ``push`` event says what
        happened) unless the batch was discarded or purged, which is a non-retryable DataError."""
        for event in reversed(self.ledger(ctx.tenant.id).read_events(run_id=plan.run_id)):
            if event.kind is EventKind.PUSH and event.details.get("batch_id") == batch.batch_id:
                c = event.counts
                return PushResult(
                    batch_id=batch.batch_id,
                    pushed=c.get("pushed", 0),
                    created=c.get("created", 0),
                    updated=c.get("updated", 0),
                    failed=c.get("failed", 0),
                    calls=c.get("calls", 0),
                )
        raise DataError(
            f"staged batch {batch.batch_id} is gone (discarded, or purged after its retention) and was "
            "never pushed; run the sync again",
            code="staging_missing",
        )

    def _delete_staging(self, tenant: str, batch_id: str) -> None:
        with self.deps.engine.begin() as conn:
            store.delete_staged(conn, tenant, batch_id)

    # ---- finish and discard ---------------------------------------------------------------------

    @activity.defn(name="finish_run")
    def finish_run(self, inp: FinishInput) -> None:
        """Close the run: store the final cursor on the sync (completed runs only), the run's status
        and counts, purge staging past its retention, and sign a ledger checkpoint."""
        self._guarded("finish_run", lambda: self._finish(inp))

    def _finish(self, inp: FinishInput) -> None:
        plan = inp.plan
        now = self.deps.clock()
        with self.deps.engine.begin() as conn:
            if store.get_run(conn, plan.run_id) is None:
                store.start_run(
                    conn,
                    run_id=plan.run_id,
                    tenant=plan.tenant,
                    sync_id=plan.sync_id,
                    mode=plan.mode.value,
                    trigger="workflow",
                    status=inp.status.value,
                    now=inp.started_at or now,
                )
            if inp.status is SyncStatus.COMPLETED:
                store.update_cursor(
                    conn,
                    plan.tenant,
                    plan.sync_id,
                    inp.final_state.model_copy(update={"page_token": None}),
                    now=now,
                    last_run_id=plan.run_id,
                    status=inp.status.value,
                )
            else:
                store.set_sync_status(
                    conn, plan.tenant, plan.sync_id, inp.status.value, now=now, last_run_id=plan.run_id
                )
            store.finish_run(
                conn,
                plan.run_id,
                status=inp.status.value,
                counts=inp.counts.model_dump(),
                message=inp.message,
                now=now,
            )
            purged = store.purge_expired_staging(conn, now=now)
        if purged:
            activity.logger.info("purged %d staged parts past their retention", purged)
        self.ledger(plan.tenant).checkpoint(self.deps.signer)

    @activity.defn(name="discard_batch")
    def discard_batch(self, inp: PushInput) -> None:
        """Delete one staged batch (cancellation cleanup); deleting twice is harmless."""
        self._guarded("discard_batch", lambda: self._delete_staging(inp.plan.tenant, inp.batch.batch_id))

    @activity.defn(name="discard_run_staging")
    def discard_run_staging(self, plan: SyncPlanRef) -> int:
        """Delete every staged batch of the run (cancellation cleanup); returns parts deleted."""
        return self._guarded("discard_run_staging", lambda: self._discard_run(plan))

    def _discard_run(self, plan: SyncPlanRef) -> int:
        with self.deps.engine.begin() as conn:
            return store.delete_staged_for_run(conn, plan.tenant, plan.sync_id, plan.run_id)


def _why(outcome: RecordOutcome) -> tuple[str, str | None]:
    return (outcome.error_code or "VENDOR_REFUSED", outcome.error_message)
