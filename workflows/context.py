"""What one sync activity call works with: its :class:`SyncContext` (tenant, sync, instruction,
connections and the tenant's view of the subprocessor registry, loaded from the store and checked,
and the run's lineage citation, :meth:`SyncContext.run`) and the :class:`ActivityKit` every activity
shares (error boundary, ledgers, stream specs, the runs' contexts, refusals)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from connectors.base import Connector
from governance.lineage import Ledger, RunRef
from governance.policy import ProcessingInstruction, SyncPlan
from governance.registry import Endpoint, Registry, TenantResidency
from governance.registry_versions import effective_registry
from schemas.connector import StreamSpec
from schemas.errors import ConfigError, CrmhubError, IntegrityError, PolicyError
from schemas.lineage import DatasetRef, DetailValue, EventKind, LineageEvent
from schemas.sync import SyncStatus
from services.notices import NoticeKind, enqueue_notice
from services.wiring import ActivityDeps
from store import connections as connection_store
from store import instructions as instruction_store
from store import runs as run_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.connections import ConnectionRow
from store.engine import Connection
from store.subprocessor_versions import ObjectionRow
from workflows.errors import to_application_error, unexpected_error

__all__ = [
    "STAGING_NAMESPACE",
    "ActivityKit",
    "BatchEvents",
    "Route",
    "SyncContext",
    "endpoint_of",
    "with_residency",
]

STAGING_NAMESPACE = "crmhub://staging"
"""Lineage dataset namespace of crmhub's sealed staging store (dataset name: the sync id)."""

_T = TypeVar("_T")
_CACHED_RUNS = 256
"""Runs whose context a worker keeps (the oldest is dropped first)."""


def _namespace(row: ConnectionRow) -> str:
    netloc = urlsplit(row.instance_url).netloc if row.instance_url else ""
    return f"{row.provider}://{netloc}" if netloc else row.provider


def endpoint_of(registry: Registry, row: ConnectionRow, instance: str | None) -> Endpoint:
    """The registry endpoint of a connection: the sync's named instance, else the one the vendor said
    hosts the connection's data (stored at connect: ``row.region_instance``), else the one whose host
    is the connection's host; :class:`PolicyError` (``unknown_endpoint``) when none is registered."""
    if instance:
        return registry.endpoint(row.provider, instance)
    if row.region_instance:
        return registry.endpoint(row.provider, row.region_instance)
    host = urlsplit(row.instance_url).hostname if row.instance_url else None
    for e in registry.endpoints:
        if e.connector == row.provider and host and e.host == host:
            return e
    raise PolicyError(
        f"the {row.provider} connection {row.id} has no registered region: name its endpoint instance "
        "on the sync (source_endpoint / destination_endpoint, e.g. eu, eu1, na1)",
        code="unknown_endpoint",
    )


def with_residency(registry: Registry, tenant: tenant_store.TenantRow) -> Registry:
    """The registry with the tenant's residency (home region, authorisations) taken from the store."""
    residency = TenantResidency(
        tenant=tenant.id,
        home_region=tenant.home_region,
        authorised_subprocessors=tenant.authorised_subprocessors,
    )
    data = registry.model_dump(by_alias=True)
    data["tenants"] = [*(t for t in data["tenants"] if t["tenant"] != tenant.id), residency.model_dump()]
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


@dataclass(frozen=True, slots=True)
class SyncContext:
    """A sync as one activity call sees it, loaded from the store and checked."""

    tenant: tenant_store.TenantRow
    sync: sync_store.SyncRow
    instruction: ProcessingInstruction
    registry: Registry  # the tenant's effective registry version with its residency from the store
    source: ConnectionRow
    destination: ConnectionRow
    registry_version: int | None = None  # None: the registry is not versioned (the configured file)
    registry_held_by: ObjectionRow | None = None  # the tenant's objection holding newer versions back

    @property
    def spec(self) -> sync_store.SyncSpec:
        return self.sync.spec

    @property
    def home(self) -> str:
        """The registry region crmhub processes and stores this tenant's data in."""
        return self.tenant.home_region

    def sync_plan(self, when: datetime) -> SyncPlan:
        """The plan :func:`governance.policy.check` judges: the mapping plus the key that fills the
        destination id property, the transforms and the instructed purpose."""
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
        return endpoint_of(self.registry, self.source, self.spec.source_endpoint)

    def destination_endpoint(self) -> Endpoint:
        return endpoint_of(self.registry, self.destination, self.spec.destination_endpoint)

    def source_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=_namespace(self.source), name=self.spec.source_stream)

    def destination_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=_namespace(self.destination), name=self.spec.destination_stream)

    def staging_dataset(self) -> DatasetRef:
        return DatasetRef(namespace=STAGING_NAMESPACE, name=self.spec.id)

    def run(self, run_id: str) -> RunRef:
        """The citation of run ``run_id`` of this sync in its lineage events."""
        return RunRef.of(self.tenant.id, run_id, sync_id=self.spec.id, instruction=self.instruction)

    def inbound(self) -> Route:
        """A pull's move: the source dataset, by its vendor, from its region into staging at home."""
        src = self.source_endpoint()
        return Route(
            source=self.source_dataset(), destination=self.staging_dataset(), subprocessor=src.subprocessor,
            region_from=src.region, region_to=self.home,
        )  # fmt: skip

    def stored(self, destination: DatasetRef | None = None) -> Route:
        """Source records kept by crmhub at home: in staging, or in ``destination`` (the quarantine)."""
        return Route(
            source=self.source_dataset(), destination=destination or self.staging_dataset(),
            subprocessor=self.registry.processor.id, region_to=self.home,
        )  # fmt: skip

    def outbound(self, source: DatasetRef) -> Route:
        """A push's move: ``source`` to the destination dataset, by its vendor, from home to its region."""
        dst = self.destination_endpoint()
        return Route(
            source=source, destination=self.destination_dataset(), subprocessor=dst.subprocessor,
            region_from=self.home, region_to=dst.region,
        )  # fmt: skip


class Route(TypedDict, total=False):
    """Where a lineage event's records went: datasets, the subprocessor and the regions."""

    source: DatasetRef | None
    destination: DatasetRef | None
    subprocessor: str | None
    region_from: str | None
    region_to: str | None


@dataclass(frozen=True, slots=True)
class BatchEvents:
    """Makes the lineage events of one batch of a run: each cites the run, names the batch first
    among its details, and all carry one time."""

    run: RunRef
    batch_id: str
    at: datetime

    def __call__(
        self,
        kind: EventKind,
        route: Route,
        counts: Mapping[str, int],
        hashes: Sequence[str] = (),
        **details: DetailValue,
    ) -> LineageEvent:
        """A ``kind`` event of the batch: records moved along ``route``, ``counts``, the records'
        keyed ``hashes`` and ``details`` (names and numbers, never values)."""
        return self.run.event(
            kind, at=self.at, counts=counts, record_id_hashes=tuple(hashes),
            details={"batch_id": self.batch_id, **details}, **route,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _RunParts:
    """What a run reads once per worker for the sync's ``spec`` (see :meth:`ActivityKit.context`)."""

    spec: sync_store.SyncSpec
    instruction: ProcessingInstruction
    source: ConnectionRow
    destination: ConnectionRow


class ActivityKit:
    """Shared by every activity thread of a worker: dependencies plus small thread-safe caches (the
    tenants' ledgers, which keep their Merkle trees, and connections' stream specs)."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self._lock = threading.Lock()
        self._ledgers: dict[str, Ledger] = {}
        self._stream_specs: dict[tuple[str, str], StreamSpec] = {}
        self._runs: dict[tuple[str, str, str], _RunParts] = {}  # oldest first
        self._registries: dict[tuple[tenant_store.TenantRow, int], Registry] = {}
        self._versions: dict[str, Registry] = {}  # registry versions by content hash

    @staticmethod
    def guarded(name: str, run: Callable[[], _T]) -> _T:
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
        """The tenant's ledger."""
        with self._lock:
            ledger = self._ledgers.get(tenant)
            if ledger is None:
                ledger = self._ledgers[tenant] = Ledger(self.deps.engine, tenant)
            return ledger

    def stream_spec(self, connector: Connector, connection_id: str, stream: str) -> StreamSpec:
        """The connection's spec of ``stream`` (primary key, deletes), asked once per process."""
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

    def context(
        self,
        tenant_id: str,
        sync_id: str,
        *,
        run_id: str | None = None,
        instruction_hash: str | None = None,
        conn: Connection | None = None,
    ) -> SyncContext:
        """The sync as the run ``run_id`` sees it; :class:`IntegrityError` if its stored instruction
        was altered or, given ``instruction_hash``, is not the one the run was planned under.

        The tenant row (home region, authorised subprocessors: a revoked authorisation stops the
        next activity) and the sync row are read every time; the instruction and the connections
        the sync names are read once per run and worker while the sync's spec stays as it was (an
        edited mapping, a new instruction version or other connections: read again), and afresh by
        a retry (attempt > 1). ``conn`` lets the caller share its read transaction."""
        if conn is None:
            with self.deps.engine.connect() as own:
                return self.context(
                    tenant_id, sync_id, run_id=run_id, instruction_hash=instruction_hash, conn=own
                )
        tenant = tenant_store.get_tenant(conn, tenant_id)
        if tenant is None:
            raise ConfigError(f"unknown tenant {tenant_id!r}")
        sync = sync_store.get_sync(conn, tenant_id, sync_id)
        if sync is None:
            raise ConfigError(f"tenant {tenant_id!r} has no sync {sync_id!r}")
        key = (tenant_id, sync_id, run_id or "")
        parts = self._cached(key) if run_id else None
        if parts is None or parts.spec != sync.spec:
            parts = self._load(conn, sync)
            if run_id:
                self._remember(key, parts)
        if instruction_hash is not None and parts.instruction.content_hash != instruction_hash:
            raise IntegrityError(
                f"instruction v{parts.instruction.version} differs from the one this run was planned "
                "under; plan again"
            )
        effective = effective_registry(conn, self.deps.subprocessors, tenant_id, self._versions)
        return SyncContext(
            tenant,
            sync,
            parts.instruction,
            self._registry(tenant, effective.registry),
            parts.source,
            parts.destination,
            effective.version,
            effective.held_by,
        )

    def _cached(self, key: tuple[str, str, str]) -> _RunParts | None:
        if activity.info().attempt > 1:  # a retry sees the store as it is now
            return None
        with self._lock:
            return self._runs.get(key)

    def _remember(self, key: tuple[str, str, str], parts: _RunParts) -> None:
        with self._lock:
            self._runs.pop(key, None)
            self._runs[key] = parts
            while len(self._runs) > _CACHED_RUNS:
                del self._runs[next(iter(self._runs))]

    def _registry(self, tenant: tenant_store.TenantRow, version: Registry) -> Registry:
        """The registry ``version`` with ``tenant``'s residency, built once per (row, version)."""
        key = (tenant, id(version))
        with self._lock:
            registry = self._registries.get(key)
        if registry is None:
            registry = with_residency(version, tenant)
            with self._lock:
                if len(self._registries) >= _CACHED_RUNS:
                    self._registries.clear()
                self._registries[key] = registry
        return registry

    def _load(self, conn: Connection, sync: sync_store.SyncRow) -> _RunParts:
        spec = sync.spec
        row = instruction_store.get_instruction(conn, spec.tenant, spec.instruction_version)
        if row is None:
            raise ConfigError(
                f"sync {spec.id!r} cites instruction v{spec.instruction_version}, which tenant "
                f"{spec.tenant!r} has not stored"
            )
        source = self._connection(conn, spec.tenant, spec.source_connection_id)
        destination = self._connection(conn, spec.tenant, spec.destination_connection_id)
        instruction = ProcessingInstruction.from_stored(
            row.content, content_hash=row.content_hash, version=row.version, tenant=spec.tenant
        )
        return _RunParts(spec, instruction, source, destination)

    @staticmethod
    def _connection(conn: Connection, tenant: str, connection_id: str) -> ConnectionRow:
        row = connection_store.get_connection(conn, connection_id)
        if row is None or row.tenant != tenant:
            raise ConfigError(f"tenant {tenant!r} has no connection {connection_id!r}")
        return row

    def append(self, tenant: str, events: Sequence[LineageEvent]) -> None:
        self.ledger(tenant).append(events)

    def append_once(self, tenant: str, run_id: str, batch_id: str, events: Sequence[LineageEvent]) -> None:
        """Append a batch's events unless an earlier attempt of the same activity already did.

        An attempt can die after appending and before its heartbeat says so; its retry would record
        the batch twice. Only retries pay for the check (the run's events are read once)."""
        if activity.info().attempt > 1 and events:
            first = events[0]
            for seen in self.ledger(tenant).read_events(run_id=run_id):
                if seen.kind is first.kind and seen.details.get("batch_id") == batch_id:
                    return
        self.append(tenant, events)

    def refuse(self, ctx: SyncContext, run_id: str, exc: PolicyError, reason: dict[str, Any]) -> None:
        """Record a refusal: a ``refusal`` lineage event (rule, fields, regions — never values) and
        the run and sync as refused."""
        details = {str(k): _detail(v) for k, v in reason.items()}
        details["error"] = type(exc).__name__
        details["code"] = exc.code
        event = ctx.run(run_id).event(
            EventKind.REFUSAL,
            at=self.deps.clock(),
            source=ctx.source_dataset(),
            destination=ctx.destination_dataset(),
            details=details,
        )
        self.append(ctx.tenant.id, [event])
        now = self.deps.clock()
        with self.deps.engine.begin() as conn:
            if run_store.get_run(conn, run_id) is None:
                run_store.start_run(
                    conn,
                    run_id=run_id,
                    tenant=ctx.tenant.id,
                    sync_id=ctx.spec.id,
                    mode="-",
                    trigger="-",
                    status=SyncStatus.REFUSED.value,
                    now=now,
                )
            run_store.finish_run(
                conn, run_id, status=SyncStatus.REFUSED.value, counts={}, message=exc.message, now=now
            )
            sync_store.set_sync_status(conn, ctx.tenant.id, ctx.spec.id, SyncStatus.REFUSED.value, now=now)
        activity.logger.warning("run %s refused: %s", run_id, exc.code)
        # A transfer the instruction would need but no mechanism covers: the instruction itself would
        # infringe Chapter V, which Art. 28(3) last sentence says to tell the controller.
        kind = (
            NoticeKind.INSTRUCTION_INFRINGEMENT
            if exc.code == "transfer_not_permitted"
            else NoticeKind.RUN_REFUSED
        )
        self.notify(
            ctx.tenant.id, kind, ctx.spec.id, {"sync_id": ctx.spec.id, "run_id": run_id, "code": exc.code}
        )

    def notify(self, tenant: str, kind: NoticeKind, subject: str, facts: Mapping[str, DetailValue]) -> None:
        """Enqueue a notice to the tenant's contacts (throttled per kind and ``subject``); the
        delivery workflow sends it (:mod:`services.notices`)."""
        throttle = self.deps.settings.notices.throttle
        enqueue_notice(
            self.deps.engine, tenant=tenant, kind=kind, facts=facts, subject=subject, throttle=throttle,
            now=self.deps.clock(),
        )  # fmt: skip
