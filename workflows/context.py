"""What one sync activity call works with: its :class:`SyncContext` (tenant, sync, instruction,
connections and the tenant's view of the subprocessor registry, loaded from the store and checked)
and the :class:`ActivityKit` every activity shares (error boundary, ledgers, stream specs, lineage
events, refusals)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from connectors.base import Connector
from governance.lineage import Ledger
from governance.policy import ProcessingInstruction, SyncPlan
from governance.registry import Endpoint, Registry, TenantResidency
from schemas.connector import StreamSpec
from schemas.errors import ConfigError, CrmhubError, IntegrityError, PolicyError
from schemas.lineage import DatasetRef, EventKind, LineageEvent
from schemas.sync import SyncStatus
from services.wiring import ActivityDeps
from store import connections as connection_store
from store import instructions as instruction_store
from store import runs as run_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.connections import ConnectionRow
from store.engine import Connection
from workflows.errors import to_application_error, unexpected_error

__all__ = ["STAGING_NAMESPACE", "ActivityKit", "SyncContext", "endpoint_of", "with_residency"]

STAGING_NAMESPACE = "crmhub://staging"
"""Lineage dataset namespace of crmhub's sealed staging store (dataset name: the sync id)."""

_T = TypeVar("_T")


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
    registry: Registry  # the deployment registry with this tenant's residency from the store
    source: ConnectionRow
    destination: ConnectionRow

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


class ActivityKit:
    """Shared by every activity thread of a worker: dependencies plus small thread-safe caches (the
    tenants' ledgers, which keep their Merkle trees, and connections' stream specs)."""

    def __init__(self, deps: ActivityDeps) -> None:
        self.deps = deps
        self._lock = threading.Lock()
        self._ledgers: dict[str, Ledger] = {}
        self._stream_specs: dict[tuple[str, str], StreamSpec] = {}

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

    def context(self, tenant_id: str, sync_id: str, *, instruction_hash: str | None = None) -> SyncContext:
        """Load the sync; :class:`IntegrityError` if its stored instruction was altered or, given
        ``instruction_hash``, is not the one the run was planned under."""
        with self.deps.engine.connect() as conn:
            tenant = tenant_store.get_tenant(conn, tenant_id)
            if tenant is None:
                raise ConfigError(f"unknown tenant {tenant_id!r}")
            sync = sync_store.get_sync(conn, tenant_id, sync_id)
            if sync is None:
                raise ConfigError(f"tenant {tenant_id!r} has no sync {sync_id!r}")
            row = instruction_store.get_instruction(conn, tenant_id, sync.spec.instruction_version)
            if row is None:
                raise ConfigError(
                    f"sync {sync_id!r} cites instruction v{sync.spec.instruction_version}, which tenant "
                    f"{tenant_id!r} has not stored"
                )
            source = self._connection(conn, tenant_id, sync.spec.source_connection_id)
            destination = self._connection(conn, tenant_id, sync.spec.destination_connection_id)
        instruction = ProcessingInstruction.from_stored(
            row.content, content_hash=row.content_hash, version=row.version, tenant=tenant_id
        )
        if instruction_hash is not None and instruction.content_hash != instruction_hash:
            raise IntegrityError(
                f"instruction v{row.version} differs from the one this run was planned under; plan again"
            )
        registry = with_residency(self.deps.subprocessors, tenant)
        return SyncContext(tenant, sync, instruction, registry, source, destination)

    @staticmethod
    def _connection(conn: Connection, tenant: str, connection_id: str) -> ConnectionRow:
        row = connection_store.get_connection(conn, connection_id)
        if row is None or row.tenant != tenant:
            raise ConfigError(f"tenant {tenant!r} has no connection {connection_id!r}")
        return row

    def event(self, ctx: SyncContext, run_id: str, kind: EventKind, **fields: Any) -> LineageEvent:
        """A lineage event of this run, citing the instruction it runs under."""
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
        event = self.event(
            ctx,
            run_id,
            EventKind.REFUSAL,
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
