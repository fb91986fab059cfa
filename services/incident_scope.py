"""What a breach touched, computed from lineage (never typed in): :func:`affected_tenants`.

A :class:`Scope` is a time window ``[start, end)`` and optional filters — tenants, sync ids,
connection ids, one subprocessor. For every tenant in scope its ledger's data events in the window
(:data:`DATA_KINDS`: records crmhub read, kept, transformed, quarantined, wrote, moved across
regions, exported or rectified) are kept when they pass the filters:

- ``syncs``: the event's sync is one of them;
- ``connections``: the event's sync reads from or writes to one of them (``store.syncs``);
- ``subprocessor``: crmhub itself or its infrastructure (registry role ``processor`` /
  ``infrastructure``) held every record, so every event counts; a vendor counts for the syncs that
  have an event through it in the window (``subprocessor`` of the pull or push).

From those events, per tenant: **subjects** — the distinct keyed hashes of record ids the events
carry (``subjects_basis = keyed_hashes``; one CRM record is one data subject's record, so this is
an upper bound on people when a person has records in two objects) or, when the events carry no
hashes, the record count (``record_counts``); **records** — the records crmhub read (``pull`` and
``export`` counts), else those it wrote (``push``), else any ``records`` count; **categories** —
the data categories of the processing-instruction versions the events cite (their object names
when an instruction lists none); **fields** — the instruction's allowed fields of the objects read,
as ``Object.Field`` (names, never values); the syncs concerned. A tenant with no such event is not
affected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.engine import Engine

from governance.lineage import Ledger
from governance.registry import Registry
from schemas.errors import ConfigError
from schemas.lineage import EventKind, LineageEvent, format_timestamp
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store

__all__ = ["DATA_KINDS", "Scope", "TenantImpact", "affected_tenants"]

DATA_KINDS: Final = frozenset(
    {
        EventKind.PULL,
        EventKind.TRANSFORM,
        EventKind.STORE,
        EventKind.PUSH,
        EventKind.TRANSFER,
        EventKind.QUARANTINE,
        EventKind.EXPORT,
        EventKind.RECTIFY,
    }
)
"""Ledger events that mean crmhub held or moved personal data of the tenant's subjects."""

KEYED_HASHES: Final = "keyed_hashes"
RECORD_COUNTS: Final = "record_counts"


@dataclass(frozen=True, slots=True)
class Scope:
    """The window ``[start, end)`` (UTC) and the filters an incident was opened over."""

    start: datetime
    end: datetime
    tenants: tuple[str, ...] = ()
    syncs: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()
    subprocessor: str | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ConfigError("--from and --to must carry a timezone (e.g. 2026-12-07T10:00:00Z)")
        if self.end <= self.start:
            raise ConfigError(
                f"--to ({format_timestamp(self.end)}) must be after --from ({format_timestamp(self.start)}): "
                "the window is [from, to)"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": format_timestamp(self.start),
            "to": format_timestamp(self.end),
            "tenants": list(self.tenants),
            "syncs": list(self.syncs),
            "connections": list(self.connections),
            "subprocessor": self.subprocessor,
        }


@dataclass(frozen=True, slots=True)
class TenantImpact:
    """One affected tenant: counts, categories and fields (names only), syncs, events read."""

    tenant: str
    subjects: int
    subjects_basis: str
    records: int
    categories: tuple[str, ...]
    fields: tuple[str, ...]
    syncs: tuple[str, ...]
    events: int
    instruction_versions: tuple[int, ...] = field(default=())


def _check_filters(conn: Any, registry: Registry, scope: Scope) -> tuple[list[str], dict[str, str]]:
    """The tenants in scope and {connection id: tenant}; :class:`ConfigError` naming an unknown one."""
    known = [t.id for t in tenant_store.list_tenants(conn)]
    for t in scope.tenants:
        if t not in known:
            raise ConfigError(f"--tenant {t!r}: no such tenant (tenants: {', '.join(known) or 'none yet'})")
    owners: dict[str, str] = {}
    for c in scope.connections:
        row = connection_store.get_connection(conn, c)
        if row is None:
            raise ConfigError(f"--connection {c!r}: no such connection; see: crmhub connections list")
        owners[c] = row.tenant
    if scope.subprocessor is not None and scope.subprocessor not in {s.id for s in registry.subprocessors}:
        ids = ", ".join(s.id for s in registry.subprocessors)
        raise ConfigError(f"--subprocessor {scope.subprocessor!r} is not in the registry ({ids})")
    tenants = list(scope.tenants) or known
    if owners:
        tenants = [t for t in tenants if t in set(owners.values())]
    return tenants, owners


def _in_syncs(conn: Any, tenant: str, scope: Scope, owners: dict[str, str]) -> set[str] | None:
    """The tenant's sync ids the sync and connection filters allow (None: no such filter)."""
    allowed: set[str] | None = None
    pairs = sync_store.sync_connections(conn, tenant)
    if scope.syncs:
        allowed = set(scope.syncs) & set(pairs)
    if scope.connections:
        mine = {c for c, t in owners.items() if t == tenant}
        by_connection = {s for s, (src, dst) in pairs.items() if src in mine or dst in mine}
        allowed = by_connection if allowed is None else allowed & by_connection
    return allowed


def _events(
    engine: Engine, tenant: str, scope: Scope, allowed: set[str] | None, vendor: str | None
) -> list[LineageEvent]:
    window = [
        e
        for e in Ledger(engine, tenant).read_events()
        if e.kind in DATA_KINDS and scope.start <= e.timestamp < scope.end
    ]
    if allowed is not None:
        window = [e for e in window if e.sync_id in allowed]
    if vendor is not None:
        through = {e.sync_id for e in window if e.subprocessor == vendor and e.sync_id}
        window = [e for e in window if e.sync_id in through or e.subprocessor == vendor]
    return window


def _records(events: Sequence[LineageEvent]) -> int:
    read = sum(e.counts.get("records", 0) for e in events if e.kind in (EventKind.PULL, EventKind.EXPORT))
    if read:
        return read
    written = sum(e.counts.get("pushed", 0) for e in events if e.kind is EventKind.PUSH)
    return written or sum(e.counts.get("records", 0) for e in events)


def _categories(
    conn: Any, tenant: str, events: Iterable[LineageEvent]
) -> tuple[list[str], list[str], list[int]]:
    """Data categories and ``Object.Field`` names of the instruction versions the events cite."""
    versions = sorted({e.instruction_version for e in events if e.instruction_version is not None})
    objects = {e.source.name for e in events if e.kind is EventKind.PULL and e.source is not None}
    categories: set[str] = set()
    fields: set[str] = set()
    for v in versions:
        row = instruction_store.get_instruction(conn, tenant, v)
        if row is None:
            continue
        categories.update(row.content.get("data_categories") or ())
        allowed: dict[str, list[str]] = row.content.get("allowed_fields") or {}
        for obj, names in allowed.items():
            if not objects or obj in objects:
                fields.update(f"{obj}.{n}" for n in names)
    if not categories:
        categories = set(objects)
    return sorted(categories), sorted(fields), versions


def affected_tenants(
    engine: Engine, registry: Registry, scope: Scope, *, always: tuple[str, ...] = ()
) -> list[TenantImpact]:
    """The tenants whose data the scope's window and filters touch (see the module docstring), by
    tenant id, and those in ``always`` even without such an event (a breach of the tenant's ledger
    itself); :class:`ConfigError` for an unknown tenant, connection or subprocessor."""
    with engine.connect() as conn:
        tenants, owners = _check_filters(conn, registry, scope)
        allowed = {t: _in_syncs(conn, t, scope, owners) for t in tenants}
    vendor: str | None = None
    if scope.subprocessor is not None:
        sub = registry.subprocessor(scope.subprocessor)
        vendor = None if sub.role in ("processor", "infrastructure") else sub.id
    out: list[TenantImpact] = []
    for tenant in sorted(tenants):
        events = _events(engine, tenant, scope, allowed[tenant], vendor)
        if not events and tenant not in always:
            continue
        hashes = {h for e in events for h in e.record_id_hashes}
        records = _records(events)
        with engine.connect() as conn:
            categories, fields, versions = _categories(conn, tenant, events)
        out.append(
            TenantImpact(
                tenant=tenant,
                subjects=len(hashes) if hashes else records,
                subjects_basis=KEYED_HASHES if hashes else RECORD_COUNTS,
                records=records,
                categories=tuple(categories),
                fields=tuple(fields),
                syncs=tuple(sorted({e.sync_id for e in events if e.sync_id})),
                events=len(events),
                instruction_versions=tuple(versions),
            )
        )
    return out
