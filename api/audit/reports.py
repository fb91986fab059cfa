"""What an auditor of one tenant sees, computed from the lineage ledger (the evidence), the run
table (status) and the registry — shared by the audit API (:mod:`api.audit.router`) and the CLI
(``crmhub audit report``).

Every function takes the tenant explicitly and reads only that tenant's rows. None of them returns
record content: the ledger holds counts, dataset names, regions, subprocessors and keyed hashes.

* :func:`lineage_report` — per sync and run: pulled / pushed / failed / quarantined / filtered /
  suppressed (records of restricted, objecting or erased data subjects a pull dropped; not pulled) /
  withheld, deletes, schema drift, purposes and instruction versions, datasets, subprocessors,
  ledger index range. The counts reconcile: pulled = pushed + failed + quarantined + filtered, where
  ``quarantined`` are records held back because a value no longer fit its field's planned type
  (sealed, never pushed) and ``filtered`` = records that were pulled but neither written,
  dead-lettered nor quarantined (a cancelled or failed run's discarded staging).
* :func:`subprocessor_report` — who touched the tenant's data, for what, where.
* :func:`transfer_report` — every cross-region move, with route, mechanism and the legal reference.
* :func:`records_of_processing` — the GDPR Art. 30(2) record the processor keeps for this controller.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Engine

from api.audit.registry_history import registry_history
from governance.registry import Registry
from governance.registry_versions import effective_registry
from schemas.errors import ConfigError
from schemas.lineage import EventKind, LineageEvent, format_timestamp
from store import instructions as instruction_store
from store import lineage as ledger_store
from store import runs as run_store
from store import tenants as tenant_store

__all__ = [
    "LINEAGE_CSV_COLUMNS",
    "Period",
    "access_report",
    "lineage_csv",
    "lineage_html",
    "lineage_report",
    "parse_when",
    "records_of_processing",
    "subprocessor_report",
    "tenant_events",
    "transfer_report",
]

LINEAGE_CSV_COLUMNS = (
    "sync_id", "run_id", "status", "started", "finished", "purposes", "instruction_versions",
    "pulled", "pushed", "created", "updated", "failed", "filtered", "withheld_values", "withheld_fields",
    "pseudonymized", "deleted_at_source", "deletes_propagated", "erased", "refusals", "sources",
    "destinations", "subprocessors", "events", "first_index", "last_index", "quarantined", "schema_drift",
)  # fmt: skip

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_jinja = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]))

SECURITY_MEASURES = (
    "Purpose limitation by construction: records are projected to the controller's field allowlist "
    "before any transform; plans outside the instruction are refused and recorded",
    "Pseudonymization of instructed fields with a per-tenant HMAC-SHA256 key",
    "Encryption at rest: per-tenant AES-256-GCM data keys (envelope encryption, wrapped by a "
    "key-encryption key), AAD binding tenant, dataset, record and purpose; key rotation by use count",
    "Encrypted orchestration history: every Temporal payload encrypted by a payload codec",
    "Regional processing: records are processed only by workers of the tenant's region; transfers "
    "need a recorded mechanism (adequacy, SCCs), else the run fails closed",
    "Tamper-evident lineage: RFC 9162 Merkle tree per tenant with Ed25519-signed checkpoints, "
    "verifiable offline",
    "Retention: staged data, dead letters and id map deleted after the instructed retention",
    "Erasure: per-subject erasure on request; tenant offboarding by crypto-shredding with a "
    "deletion certificate",
    "Access control: OAuth tokens sealed by the vault; auditor tokens scoped to one tenant, "
    "read-only, stored hashed, every access logged",
)


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UTC; either end open."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.end <= self.start:
            raise ConfigError("the period's end must be after its start (--to after --from)")

    def contains(self, when: datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "from": format_timestamp(self.start) if self.start else None,
            "to": format_timestamp(self.end) if self.end else None,
        }

    @staticmethod
    def parse(start: str | None, end: str | None) -> Period:
        """From ISO 8601 dates or datetimes (a date means midnight UTC; naive means UTC)."""
        return Period(parse_when(start, "from"), parse_when(end, "to"))


def parse_when(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date (midnight UTC) or datetime (naive: UTC) in UTC; None when empty;
    :class:`ConfigError` naming ``name`` when it is neither."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{name}: not an ISO 8601 date or datetime (e.g. 2025-01-31)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def tenant_events(
    engine: Engine, tenant: str, period: Period | None = None
) -> list[tuple[int, LineageEvent]]:
    """``(index, event)`` of the tenant's ledger in index order, within ``period`` if given."""
    with engine.connect() as conn:
        size = ledger_store.head_size(conn, tenant)
        rows = ledger_store.read_event_rows(conn, tenant, 0, size)
    out = []
    for r in rows:
        event = LineageEvent.from_canonical(r.event)
        if period is None or period.contains(event.timestamp):
            out.append((r.idx, event))
    return out


def access_report(engine: Engine, tenant: str, period: Period | None = None) -> dict[str, Any]:
    """The tenant's ``access`` events (:mod:`services.access_ledger`) in ledger order: index, time,
    action, actor (``web:<user id>``, ``cli:kh_…``, ``codec:<token id>``), target, counts; and the
    count per action. Each index is an entry of the signed ledger report, so it verifies offline."""
    events = [
        {
            "index": i,
            "timestamp": format_timestamp(e.timestamp),
            "action": e.details.get("action"),
            "actor": e.details.get("actor"),
            "target": e.details.get("target"),
            "counts": dict(e.counts),
        }
        for i, e in tenant_events(engine, tenant, period)
        if e.kind is EventKind.ACCESS
    ]
    by_action: dict[str, int] = {}
    for x in events:
        _add(by_action, str(x["action"]), 1)
    return {"tenant": tenant, "events": events, "by_action": dict(sorted(by_action.items()))}


def _ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


def _add(target: dict[str, int], key: str, value: int) -> None:
    target[key] = target.get(key, 0) + value


def lineage_report(
    engine: Engine, tenant: str, period: Period | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """Per sync and run figures for ``tenant`` in ``period`` (see the module docstring)."""
    period = period or Period()
    events = tenant_events(engine, tenant, period)
    runs: dict[str, dict[str, Any]] = {}
    for idx, e in events:
        if e.kind is EventKind.ACCESS:  # a person's touch, not a run: listed by access_report
            continue
        run = runs.get(e.run_id)
        if run is None:
            run = runs[e.run_id] = {
                "sync_id": e.sync_id,
                "run_id": e.run_id,
                "purposes": set(),
                "instruction_versions": set(),
                "instruction_hashes": set(),
                "counts": {},
                "withheld_fields": set(),
                "drift": [],
                "sources": set(),
                "destinations": set(),
                "subprocessors": set(),
                "events_by_kind": {},
                "first_index": idx,
                "last_index": idx,
                "first_event": e.timestamp,
                "last_event": e.timestamp,
            }
        run["sync_id"] = run["sync_id"] or e.sync_id
        run["last_index"], run["last_event"] = idx, e.timestamp
        _add(run["events_by_kind"], e.kind.value, 1)
        if e.purpose:
            run["purposes"].add(e.purpose)
        if e.instruction_version is not None:
            run["instruction_versions"].add(e.instruction_version)
        if e.instruction_hash:
            run["instruction_hashes"].add(e.instruction_hash)
        if e.source:
            run["sources"].add(f"{e.source.namespace}/{e.source.name}")
        if e.destination:
            run["destinations"].add(f"{e.destination.namespace}/{e.destination.name}")
        if e.subprocessor:
            run["subprocessors"].add(e.subprocessor)
        c, counts = e.counts, run["counts"]
        if e.kind is EventKind.PULL:
            _add(counts, "pulled", c.get("records", 0))
            _add(counts, "deleted_at_source", c.get("deleted", 0))
            _add(counts, "withheld_values", c.get("withheld_values", 0))
            _add(counts, "pseudonymized", c.get("pseudonymized", 0))
            _add(counts, "suppressed", c.get("suppressed", 0))  # data subjects' records dropped unread
            withheld = e.details.get("withheld")
            if isinstance(withheld, str) and withheld:
                run["withheld_fields"].update(withheld.split(","))
        elif e.kind is EventKind.PUSH:
            for key in ("pushed", "created", "updated", "failed"):
                _add(counts, key, c.get(key, 0))
        elif e.kind is EventKind.DELETE:
            _add(counts, "deletes_propagated", c.get("deleted", 0))
            _add(counts, "deletes_failed", c.get("failed", 0))
            for key in ("staging_parts", "dead_letters", "id_map_rows"):
                _add(counts, f"retention_{key}", c.get(key, 0))
        elif e.kind is EventKind.ERASE:
            _add(counts, "erased", sum(c.values()))
        elif e.kind is EventKind.REFUSAL:
            _add(counts, "refusals", 1)
        elif e.kind is EventKind.MERGE:
            _add(counts, "merged_at_source", c.get("merged", 0))
        elif e.kind is EventKind.QUARANTINE:
            _add(counts, "quarantined", c.get("records", 0))
        elif e.kind is EventKind.DRIFT:
            changes = e.details.get("changes")
            if isinstance(changes, str) and changes:
                run["drift"] += [x for x in changes.split(" | ") if x not in run["drift"]]
    with engine.connect() as conn:
        stored = {r: run_store.get_run(conn, r) for r in runs}
    out_runs = []
    totals: dict[str, int] = {}
    for run_id, run in runs.items():
        counts = run["counts"]
        for key in ("pulled", "pushed", "created", "updated", "failed", "quarantined", "withheld_values",
                    "pseudonymized", "deleted_at_source", "deletes_propagated", "erased",
                    "refusals", "merged_at_source", "suppressed"):  # fmt: skip
            counts.setdefault(key, 0)
        held = counts["pushed"] + counts["failed"] + counts["quarantined"]
        counts["filtered"] = max(counts["pulled"] - held, 0)
        row = stored.get(run_id)
        if row is not None and row.tenant != tenant:  # pragma: no cover - run ids are tenant-scoped
            row = None
        out_runs.append(
            {
                "sync_id": run["sync_id"],
                "run_id": run_id,
                "status": row.status if row else None,
                "mode": row.mode if row else None,
                "started": _ts(row.started) if row else _ts(run["first_event"]),
                "finished": _ts(row.finished) if row else _ts(run["last_event"]),
                "purposes": sorted(run["purposes"]),
                "instruction_versions": sorted(run["instruction_versions"]),
                "instruction_hashes": sorted(run["instruction_hashes"]),
                "counts": dict(sorted(counts.items())),
                "withheld_fields": sorted(run["withheld_fields"]),
                "schema_drift": list(run["drift"]),
                "datasets": {"sources": sorted(run["sources"]), "destinations": sorted(run["destinations"])},
                "subprocessors": sorted(run["subprocessors"]),
                "events": dict(sorted(run["events_by_kind"].items())),
                "ledger_indexes": [run["first_index"], run["last_index"]],
            }
        )
        for key, value in counts.items():
            _add(totals, key, value)
    syncs: dict[str, dict[str, Any]] = {}
    for r in out_runs:
        s = syncs.setdefault(r["sync_id"] or "-", {"sync_id": r["sync_id"], "runs": 0, "counts": {}})
        s["runs"] += 1
        for key, value in r["counts"].items():
            _add(s["counts"], key, value)
    with engine.connect() as conn:
        size = ledger_store.head_size(conn, tenant)
        signed = ledger_store.list_checkpoints(conn, tenant)
    return {
        "format": "crmhub.audit.lineage/1",
        "tenant": tenant,
        "period": period.as_dict(),
        "generated_at": format_timestamp(now or datetime.now(UTC)),
        "ledger": {
            "origin": f"crmhub/{tenant}",
            "size": size,
            "events_in_period": len(events),
            "latest_checkpoint_size": signed[-1].size if signed else None,
        },
        "totals": dict(sorted(totals.items())),
        "syncs": list(syncs.values()),
        "runs": out_runs,
    }


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula (OWASP "CSV Injection"): a text value
    starting with ``= + - @``, tab or carriage return gets a leading ``'``. Numbers are left alone."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def lineage_csv(report: dict[str, Any]) -> str:
    """One row per run, the columns of :data:`LINEAGE_CSV_COLUMNS` (lists joined by ``;``).

    RFC 4180 (CRLF rows, so a field holding CR or LF is quoted); every text cell passes
    :func:`_csv_cell`, since run, sync and purpose names come from customers' configurations."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(LINEAGE_CSV_COLUMNS)
    for r in report["runs"]:
        c = r["counts"]
        writer.writerow(
            _csv_cell(cell) for cell in [
                r["sync_id"] or "", r["run_id"], r["status"] or "", r["started"] or "", r["finished"] or "",
                ";".join(r["purposes"]), ";".join(str(v) for v in r["instruction_versions"]),
                c["pulled"], c["pushed"], c["created"], c["updated"], c["failed"], c["filtered"],
                c["withheld_values"], ";".join(r["withheld_fields"]), c["pseudonymized"],
                c["deleted_at_source"], c["deletes_propagated"], c["erased"], c["refusals"],
                ";".join(r["datasets"]["sources"]), ";".join(r["datasets"]["destinations"]),
                ";".join(r["subprocessors"]), sum(r["events"].values()), *r["ledger_indexes"],
                c["quarantined"], ";".join(r["schema_drift"]),
            ]
        )  # fmt: skip
    return buf.getvalue()


def lineage_html(
    report: dict[str, Any], cover: dict[str, Any] | None = None, *, filter_action: str | None = None
) -> str:
    """A printable HTML page of the report (values escaped): the auditor's first page
    (:func:`api.audit.cover.cover_page`) when ``cover`` is given, then the figures per run. With
    ``filter_action`` (the URL serving the page) it carries a period form that requests it again."""
    return _jinja.get_template("lineage.html").render(report=report, cover=cover, filter_action=filter_action)


def _route_index(registry: Registry) -> dict[tuple[str, str, str], Any]:
    return {(t.from_region, t.to_region, t.subprocessor): t for t in registry.transfers}


def subprocessor_report(
    engine: Engine, registry: Registry, tenant: str, period: Period | None = None
) -> dict[str, Any]:
    """Every subprocessor (crmhub itself included) the tenant's ledger names in ``period``: entity,
    service, country, what it did (event kinds, purposes, datasets), where (regions), how much."""
    period = period or Period()
    with engine.connect() as conn:
        row = tenant_store.get_tenant(conn, tenant)
    authorised = set(row.authorised_subprocessors) if row else set()
    seen: dict[str, dict[str, Any]] = {}
    events = tenant_events(engine, tenant, period)
    for _, e in events:
        if not e.subprocessor:
            continue
        s = seen.get(e.subprocessor)
        if s is None:
            s = seen[e.subprocessor] = {
                "id": e.subprocessor, "kinds": {}, "purposes": set(), "regions": set(), "datasets": set(),
                "records": 0, "first_seen": e.timestamp, "last_seen": e.timestamp,
            }  # fmt: skip
        _add(s["kinds"], e.kind.value, 1)
        if e.purpose:
            s["purposes"].add(e.purpose)
        for region in (e.region_from, e.region_to):
            if region:
                s["regions"].add(region)
        for d in (e.source, e.destination):
            if d:
                s["datasets"].add(f"{d.namespace}/{d.name}")
        s["records"] += len(e.record_id_hashes)
        s["last_seen"] = e.timestamp
    out = []
    for sub_id, s in sorted(seen.items()):
        entry = next((x for x in registry.subprocessors if x.id == sub_id), None)
        out.append(
            {
                "id": sub_id,
                "entity": entry.entity if entry else None,
                "service": entry.service if entry else None,
                "country": entry.country if entry else None,
                "role": entry.role if entry else None,
                "authorised": (entry is not None and entry.role == "processor") or sub_id in authorised,
                "activities": dict(sorted(s["kinds"].items())),
                "purposes": sorted(s["purposes"]),
                "regions": sorted(s["regions"]),
                "datasets": sorted(s["datasets"]),
                "record_ids_seen": s["records"],
                "first_seen": _ts(s["first_seen"]),
                "last_seen": _ts(s["last_seen"]),
            }
        )
    return {
        "format": "crmhub.audit.subprocessors/1",
        "tenant": tenant,
        "period": period.as_dict(),
        "authorised_subprocessors": sorted(authorised),
        "subprocessors": out,
        "registry": registry_history(engine, registry, tenant, events),
    }


def transfer_report(
    engine: Engine, registry: Registry, tenant: str, period: Period | None = None
) -> dict[str, Any]:
    """Every move of the tenant's data between two different regions in ``period``: ledger index,
    time, run, kind, route, subprocessor, mechanism and the reference the route relies on.

    ``routes`` sums the moves per route and mechanism. A move is recorded by a ``transfer`` event
    (the mechanism it relied on); a ``push`` or ``pull`` across regions appended with its batch's
    ``transfer`` event (same run, route, subprocessor and time) is that transfer, not another one.
    A cross-region move no ``transfer`` event covers is summed as ``(none recorded)``."""
    period = period or Period()
    routes = _route_index(registry)
    moves = []
    summary: dict[str, dict[str, Any]] = {}
    within = 0
    events = list(tenant_events(engine, tenant, period))
    recorded = {
        (e.run_id, e.region_from, e.region_to, e.subprocessor, e.timestamp)
        for _, e in events
        if e.kind is EventKind.TRANSFER and e.transfer_mechanism is not None
    }
    for idx, e in events:
        if not (e.region_from and e.region_to):
            continue
        if e.region_from == e.region_to:
            within += 1
            continue
        route = routes.get((e.region_from, e.region_to, e.subprocessor or ""))
        mechanism = e.transfer_mechanism.value if e.transfer_mechanism else None
        records = len(e.record_id_hashes)
        moves.append(
            {
                "index": idx, "timestamp": _ts(e.timestamp), "run_id": e.run_id, "sync_id": e.sync_id,
                "kind": e.kind.value, "from": e.region_from, "to": e.region_to,
                "subprocessor": e.subprocessor, "mechanism": mechanism,
                "reference": route.reference if route else None, "records": records,
            }
        )  # fmt: skip
        batch = (e.run_id, e.region_from, e.region_to, e.subprocessor, e.timestamp)
        if mechanism is None and batch in recorded:
            continue  # summed with the transfer event of its batch
        key = f"{e.region_from}->{e.region_to} {e.subprocessor or '-'} ({mechanism or 'none recorded'})"
        s = summary.setdefault(key, {"route": key, "events": 0, "records": 0})
        s["events"] += 1
        s["records"] += records
    return {
        "format": "crmhub.audit.transfers/1",
        "tenant": tenant,
        "period": period.as_dict(),
        "transfers": moves,
        "routes": list(summary.values()),
        "moves_within_one_region": within,
    }


def _instruction_entries(rows: Iterable[instruction_store.InstructionRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        c = r.content
        out.append(
            {
                "version": r.version, "content_hash": r.content_hash, "purpose": c.get("purpose"),
                "data_categories": c.get("data_categories", []), "objects": c.get("allowed_fields", {}),
                "pseudonymized": c.get("pseudonymize", {}), "retention_days": c.get("retention_days"),
                "permitted_regions": c.get("permitted_regions", []),
                "permitted_subprocessors": c.get("permitted_subprocessors", []),
                "valid_from": c.get("valid_from"), "valid_to": c.get("valid_to"),
            }
        )  # fmt: skip
    return out


def records_of_processing(
    engine: Engine, registry: Registry, tenant: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The Art. 30(2) record for this controller: (a) processor and controller, (b) categories of
    processing (every instruction version), (c) transfers to third countries and their safeguards,
    (d) a general description of the technical and organisational measures."""
    from sqlalchemy import select

    with engine.connect() as conn:
        row = tenant_store.get_tenant(conn, tenant)
        if row is None:
            raise ConfigError(f"unknown tenant {tenant!r}")
        versions = conn.execute(
            select(instruction_store.instructions.c.version)
            .where(instruction_store.instructions.c.tenant == tenant)
            .order_by(instruction_store.instructions.c.version)
        ).scalars()
        instructions = [
            i for v in list(versions) if (i := instruction_store.get_instruction(conn, tenant, int(v)))
        ]
        registry = effective_registry(conn, registry, tenant).registry  # the version it runs under
    proc = registry.processor
    authorised = [
        s
        for s in registry.subprocessors
        if s.role == "infrastructure" or s.id in row.authorised_subprocessors
    ]
    third = [
        {
            "from": t.from_region,
            "to": t.to_region,
            "subprocessor": t.subprocessor,
            "mechanism": t.mechanism.value,
            "reference": t.reference,
        }
        for t in registry.transfers
        if t.from_region == row.home_region and t.subprocessor in row.authorised_subprocessors
    ]
    observed = transfer_report(engine, registry, tenant)["routes"]
    return {
        "format": "crmhub.audit.art30-2/1",
        "generated_at": format_timestamp(now or datetime.now(UTC)),
        "processor": {
            "id": proc.id,
            "entity": proc.entity,
            "country": proc.country,
            "service": proc.service,
            **_contact(registry, proc.id),
        },
        "controller": {
            "tenant": row.id,
            "name": row.name,
            "home_region": row.home_region,
            **_contact(registry, row.id),
        },
        # Art. 30(2)(a) asks for representative and DPO "where applicable": listed, not judged.
        "not_recorded": [
            f"{role} {field}"
            for role, party in (("processor", proc.id), ("controller", row.id))
            for field in ("contact", "representative", "dpo")
            if _contact(registry, party)[field] is None
        ],
        "categories_of_processing": _instruction_entries(instructions),
        "subprocessors": [
            {
                "id": s.id,
                "role": s.role,
                "entity": s.entity,
                "service": s.service,
                "country": s.country,
                "regions": list(s.regions),
            }
            for s in authorised
        ],
        "transfers_to_third_countries": {"permitted_routes": third, "observed_routes": observed},
        "security_measures": list(SECURITY_MEASURES),
    }


def _contact(registry: Registry, party: str) -> dict[str, Any]:
    """Art. 30(2)(a) details of ``party`` (processor or tenant id): contact, representative (Art. 27)
    and DPO (Art. 37) — ``None`` where the registry records none."""
    c = registry.contacts.get(party)
    if c is None:
        return {"contact": None, "representative": None, "dpo": None}
    return {
        "contact": {"name": c.name, "address": c.address, "email": c.email},
        "representative": c.representative.model_dump() if c.representative else None,
        "dpo": c.dpo.model_dump() if c.dpo else None,
    }
