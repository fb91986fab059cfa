"""The activities of :class:`~workflows.dsr.DataSubjectRequestWorkflow`: ``dsr_plan`` (control
queue, metadata only), ``dsr_export`` and ``dsr_erase`` (the tenant's region queue).

Finding a subject
-----------------
crmhub never stores a subject's e-mail or record id in clear: staged parts and dead letters are
vault-sealed, the id map and the ledger hold keyed hashes (``kh_…``) of *source record ids*. So:

1. **source lookup** — each sync's source stream is read (the instruction's allowed fields only)
   and records whose values equal the subject's e-mail (case-insensitive) or given ids yield their
   source ids → keyed hashes (the same ``keyed_hash`` the pull activity wrote);
2. **staging** — every staged part of the tenant is opened and matched by value (the e-mail, its
   per-tenant pseudonym, the ids);
3. **dead letters** — every dead letter is opened and matched the same way;
4. with the keyed hashes: **id map** rows (→ destination ids) and the **lineage trace** (every
   ledger event whose ``record_id_hashes`` names one of them: pull, push, transfer, delete …).

``dsr_export`` seals the JSON export (records found in crmhub's stores, source ids, destinations,
lineage trace) into ``dsr_exports`` for the CLI and records an ``export`` lineage event.
``dsr_erase`` removes the subject from staging (parts are resealed without their records), dead
letters, the id map and the relationship state (``association_links``, ``association_deferrals``:
:func:`store.dsr.delete_subject_links`), optionally deletes the destination records first
(``--propagate``, ``WriteMode.DELETE`` through the sync's destination connector), and records an
``erase`` event naming the destinations. The source CRM is the controller's: crmhub reports what
it found there and leaves it (a later sync would bring the subject back unless the controller erases
it there).

Both are idempotent (a retry finds less or nothing) and heartbeat as they go. Errors leave through
:meth:`~workflows.context.ActivityKit.guarded`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from temporalio import activity

from governance.lineage import RunRef
from schemas.connector import ReadMode, Record, StreamState, WriteMode
from schemas.dsr import DSR_PURPOSE, DsrDestination, DsrInput, DsrKind, DsrPlan, DsrResult
from schemas.errors import ConfigError, CrmhubError
from schemas.lineage import EventKind, LineageEvent, format_timestamp
from services.wiring import ActivityDeps
from store import auditors as auditor_store
from store import dead_letters as dead_letter_store
from store import dsr as dsr_store
from store import id_map as id_map_store
from store import lineage as ledger_store
from store import staging as staging_store
from store import suppressions as suppression_store
from store import tenants as tenant_store
from workflows.context import ActivityKit, SyncContext
from workflows.dsr_rectify import rectify_destination
from workflows.dsr_subject import open_corrections, open_export, open_subject, seal_subject
from workflows.staging import PendingPart, open_part, seal_part

__all__ = ["EXPORT_FORMAT", "DsrActivities", "open_export", "open_subject", "seal_subject"]

EXPORT_FORMAT = "crmhub.dsr.export/1"
_PAGE = 2000
_EXPORT_TTL = timedelta(days=1)


@dataclass
class _Matcher:
    needles: set[str]
    pseudonyms: set[str]

    def __call__(self, record: Record) -> bool:
        for value in record.values():
            if isinstance(value, str) and (value.casefold() in self.needles or value in self.pseudonyms):
                return True
            if isinstance(value, int) and not isinstance(value, bool) and str(value) in self.needles:
                return True
        return False


@dataclass
class _SyncFindings:
    ctx: SyncContext
    keys: set[str] = field(default_factory=set)
    source_ids: list[str] = field(default_factory=list)
    source_records: list[Record] = field(default_factory=list)  # as read (allowed fields), for rectify
    staging: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    staged_records: list[dict[str, Any]] = field(default_factory=list)
    letters: list[dict[str, Any]] = field(default_factory=list)
    id_map: dict[str, str] = field(default_factory=dict)


@dataclass
class _Findings:
    syncs: list[_SyncFindings] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return set().union(*(s.keys for s in self.syncs)) if self.syncs else set()


class DsrActivities:
    """Activities of the data-subject-request workflow, bound to injected dependencies."""

    def __init__(self, deps: ActivityDeps, *, page_size: int = _PAGE) -> None:
        self.deps = deps
        self.kit = ActivityKit(deps)
        self.page_size = page_size

    def control_activities(self) -> list[Callable[..., Any]]:
        return [self.dsr_plan]

    def region_activities(self) -> list[Callable[..., Any]]:
        return [self.dsr_export, self.dsr_erase, self.dsr_restrict, self.dsr_rectify]

    # ---- plan ----------------------------------------------------------------------------------

    @activity.defn(name="dsr_plan")
    def dsr_plan(self, inp: DsrInput) -> DsrPlan:
        """The tenant's region queue and syncs; ConfigError for an unknown tenant."""
        return self.kit.guarded("dsr_plan", lambda: self._plan(inp))

    def _plan(self, inp: DsrInput) -> DsrPlan:
        with self.deps.engine.connect() as conn:
            tenant = tenant_store.get_tenant(conn, inp.tenant)
            if tenant is None:
                raise ConfigError(f"unknown tenant {inp.tenant!r}")
            syncs = dsr_store.sync_ids(conn, inp.tenant)
        settings = self.deps.settings
        region = settings.region_for(tenant.home_region)
        return DsrPlan(region=region, task_queue=settings.task_queue(region), syncs=syncs)

    # ---- export ----------------------------------------------------------------------------------

    @activity.defn(name="dsr_export")
    def dsr_export(self, inp: DsrInput) -> DsrResult:
        """Find the subject everywhere crmhub looks and store the sealed JSON export."""
        return self.kit.guarded("dsr_export", lambda: self._export(inp))

    def _export(self, inp: DsrInput) -> DsrResult:
        if inp.kind is not DsrKind.EXPORT:
            raise ConfigError("dsr_export serves export requests only")
        found = self._locate(inp)
        now = self.deps.clock()
        destinations = [self._destination(s) for s in found.syncs if s.id_map]
        doc = {
            "format": EXPORT_FORMAT,
            "tenant": inp.tenant,
            "request_id": inp.request_id,
            "generated_at": format_timestamp(now),
            "held_by_crmhub": {
                "staging": [r for s in found.syncs for r in s.staged_records],
                "dead_letters": [r for s in found.syncs for r in s.letters],
                "id_map": [
                    {"sync_id": s.ctx.spec.id, "source_key_hash": k, "destination_id": d}
                    for s in found.syncs
                    for k, d in sorted(s.id_map.items())
                ],
            },
            "source_records": [
                {
                    "sync_id": s.ctx.spec.id,
                    "source": s.ctx.source.provider,
                    "stream": s.ctx.spec.source_stream,
                    "id": i,
                }
                for s in found.syncs
                for i in s.source_ids
            ],
            "destinations": [d.model_dump(mode="json") for d in destinations],
            "record_key_hashes": sorted(found.keys),
            "lineage_trace": found.trace,
            "notes": found.notes,
        }
        blob = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        sealed = self.deps.vault.seal(
            inp.tenant, blob, dataset="dsr-export", object_id=inp.request_id, purpose=DSR_PURPOSE
        )
        with self.deps.engine.begin() as conn:
            auditor_store.put_dsr_export(
                conn,
                request_id=inp.request_id,
                tenant=inp.tenant,
                sealed=sealed,
                now=now,
                expires_at=now + _EXPORT_TTL,
            )
        result = self._result(inp, found, destinations, export_ready=True)
        index = self._record(inp, EventKind.EXPORT, found, result, reason="data-subject access request")
        return result.model_copy(update={"ledger_index": index})

    # ---- erase -----------------------------------------------------------------------------------

    @activity.defn(name="dsr_erase")
    def dsr_erase(self, inp: DsrInput) -> DsrResult:
        """Remove the subject from crmhub's stores (and, with ``propagate``, from the destinations)."""
        return self.kit.guarded("dsr_erase", lambda: self._erase(inp))

    def _erase(self, inp: DsrInput) -> DsrResult:
        if inp.kind is not DsrKind.ERASE:
            raise ConfigError("dsr_erase serves erase requests only")
        return self._remove(inp, EventKind.ERASE, reason="data-subject erasure request")

    @activity.defn(name="dsr_restrict")
    def dsr_restrict(self, inp: DsrInput) -> DsrResult:
        """Suppress the subject at read time (restriction or objection): their staged records are
        dropped, their source keys suppressed, and with ``propagate`` their destination records
        deleted. Dead letters stay (stored, not processed)."""
        return self.kit.guarded("dsr_restrict", lambda: self._restrict(inp))

    def _restrict(self, inp: DsrInput) -> DsrResult:
        if inp.kind not in (DsrKind.RESTRICT, DsrKind.OBJECT):
            raise ConfigError("dsr_restrict serves restriction and objection requests only")
        reason = "restriction" if inp.kind is DsrKind.RESTRICT else "objection"
        return self._remove(inp, EventKind.RESTRICT, reason=f"data-subject {reason} request")

    def _remove(self, inp: DsrInput, kind: EventKind, *, reason: str) -> DsrResult:
        """Erase (everything crmhub holds) or restrict (staging only; the id map too when the
        destination records are deleted) — then put the subject's source keys on the suppression
        list, so no later sync brings them back."""
        found = self._locate(inp)
        destinations = [self._destination(s) for s in found.syncs if s.id_map]
        if inp.propagate:
            destinations = [self._propagate(s) for s in found.syncs if s.id_map]
        erase = inp.kind is DsrKind.ERASE
        staged = letters = ids = 0
        links: Counter[str] = Counter()
        for s in found.syncs:
            with self.deps.engine.begin() as conn:
                staged += self._reseal(conn, s)
                if erase:
                    letters += dsr_store.delete_dead_letters(conn, inp.tenant, [x["id"] for x in s.letters])
                    links.update(
                        dsr_store.delete_subject_links(conn, inp.tenant, s.ctx.spec.id, sorted(s.keys))
                    )
                if erase or inp.propagate:
                    ids += id_map_store.delete_id_map(conn, inp.tenant, s.ctx.spec.id, sorted(s.id_map))
            activity.heartbeat(f"{inp.kind.value}: done in {s.ctx.spec.id}")
        with self.deps.engine.begin() as conn:
            suppressed = suppression_store.add_suppressions(
                conn, inp.tenant, sorted(found.keys), reason=inp.kind.value, request_id=inp.request_id,
                now=self.deps.clock(),
            )  # fmt: skip
        result = self._result(inp, found, destinations, export_ready=False).model_copy(
            update={
                "staging_records": staged,
                "dead_letters": letters if erase else len([x for s in found.syncs for x in s.letters]),
                "id_map_rows": ids,
                **links,
                "propagated": inp.propagate,
                "suppressed": suppressed,
            }
        )
        if not found.keys:
            result = result.model_copy(
                update={"notes": [*result.notes, "the subject was not found: nothing to suppress"]}
            )
        index = self._record(inp, kind, found, result, reason=reason)
        return result.model_copy(update={"ledger_index": index})

    # ---- rectify ---------------------------------------------------------------------------------

    @activity.defn(name="dsr_rectify")
    def dsr_rectify(self, inp: DsrInput) -> DsrResult:
        """Push the subject's corrected values to every destination that holds their records."""
        return self.kit.guarded("dsr_rectify", lambda: self._rectify(inp))

    def _rectify(self, inp: DsrInput) -> DsrResult:
        if inp.kind is not DsrKind.RECTIFY:
            raise ConfigError("dsr_rectify serves rectification requests only")
        if not inp.scan_sources:
            raise ConfigError("a rectification reads the subject's source records: drop --no-source-scan")
        corrections = open_corrections(self.deps.vault, inp)
        if not corrections:
            raise ConfigError("a rectification needs at least one corrected value: pass --set FIELD=VALUE")
        found = self._locate(inp)
        destinations: list[DsrDestination] = []
        for s in found.syncs:
            if not s.id_map:
                continue
            dest, note = rectify_destination(
                self.kit, s.ctx, s.source_records, corrections, self._destination(s)
            )
            destinations.append(dest)
            if note:
                found.notes.append(note)
        result = self._result(inp, found, destinations, export_ready=False)
        fields = ",".join(sorted(corrections))
        index = self._record(
            inp, EventKind.RECTIFY, found, result, reason="data-subject rectification request", fields=fields
        )
        return result.model_copy(update={"ledger_index": index})

    def _reseal(self, conn: Any, s: _SyncFindings) -> int:
        """Rewrite each staged part holding the subject without their records; returns records removed."""
        removed = 0
        for (batch_id, number), positions in s.staging.items():
            parts = staging_store.get_staged(conn, s.ctx.tenant.id, batch_id, part=number)
            if not parts:
                continue
            part = parts[0]
            keys, records, deleted = open_part(self.deps.vault, s.ctx, part)
            drop = set(positions)
            pending = PendingPart(
                keys=[k for i, k in enumerate(keys) if i not in drop],
                records=[r for i, r in enumerate(records) if i not in drop],
                deleted=deleted,
            )
            sealed, sealed_deleted = seal_part(self.deps.vault, s.ctx, batch_id, number, pending)
            staging_store.put_staged(
                conn,
                replace(part, sealed=sealed, records=len(pending.records), deleted_keys=sealed_deleted),
            )
            removed += len(records) - len(pending.records)
        return removed

    def _propagate(self, s: _SyncFindings) -> DsrDestination:
        """Delete the subject's records at the sync's destination; returns what happened there."""
        dest = self._destination(s)
        connector = self.deps.connector_factory(s.ctx.spec.destination_connection_id)
        try:
            stream = self.kit.stream_spec(
                connector, s.ctx.spec.destination_connection_id, s.ctx.spec.destination_stream
            )
            targets = sorted(set(s.id_map.values()))
            if not stream.supports_deletes:
                return dest.model_copy(
                    update={"failed": len(targets), "error_codes": ["DELETE_NOT_SUPPORTED"]}
                )
            result = connector.write_batch(
                stream.name,
                [{stream.primary_key: t} for t in targets],
                WriteMode.DELETE,
                external_id=stream.primary_key,
            )
        finally:
            connector.close()
        ok = [o for o in result.outcomes if o.ok]
        codes = sorted({o.error_code or "VENDOR_REFUSED" for o in result.outcomes if not o.ok})
        return dest.model_copy(
            update={"deleted": len(ok), "failed": len(result.outcomes) - len(ok), "error_codes": codes}
        )

    # ---- shared ----------------------------------------------------------------------------------

    @staticmethod
    def _destination(s: _SyncFindings) -> DsrDestination:
        return DsrDestination(
            sync_id=s.ctx.spec.id,
            connector=s.ctx.destination.provider,
            stream=s.ctx.spec.destination_stream,
            connection_id=s.ctx.spec.destination_connection_id,
            records=len(set(s.id_map.values())),
        )

    def _result(
        self, inp: DsrInput, found: _Findings, destinations: list[DsrDestination], *, export_ready: bool
    ) -> DsrResult:
        return DsrResult(
            request_id=inp.request_id,
            tenant=inp.tenant,
            kind=inp.kind,
            staging_records=sum(len(s.staged_records) for s in found.syncs),
            dead_letters=sum(len(s.letters) for s in found.syncs),
            id_map_rows=sum(len(s.id_map) for s in found.syncs),
            source_records=sum(len(s.source_ids) for s in found.syncs),
            lineage_events=len(found.trace),
            destinations=destinations,
            export_ready=export_ready,
            notes=found.notes,
        )

    def _record(
        self,
        inp: DsrInput,
        kind: EventKind,
        found: _Findings,
        result: DsrResult,
        *,
        reason: str,
        fields: str = "",
    ) -> int:
        """Append the request's lineage event (keyed hashes, counts, destinations) and sign a checkpoint."""
        run = RunRef.of(inp.tenant, f"dsr:{inp.request_id}", purpose=DSR_PURPOSE)
        dests = result.destinations
        event = run.event(
            kind,
            at=self.deps.clock(),
            counts={
                "staging_records": result.staging_records,
                "dead_letters": result.dead_letters,
                "id_map_rows": result.id_map_rows,
                "source_records": result.source_records,
                "lineage_events": result.lineage_events,
                "destination_records": sum(d.records for d in result.destinations),
                "destination_deleted": sum(d.deleted for d in result.destinations),
                "destination_failed": sum(d.failed for d in result.destinations),
                **({"suppressed": result.suppressed} if result.suppressed else {}),
                **(
                    {
                        "association_links": result.association_links,
                        "association_deferrals": result.association_deferrals,
                    }
                    if kind is EventKind.ERASE
                    else {}
                ),
                **({"destination_rectified": n} if (n := sum(d.rectified for d in dests)) else {}),
            },
            record_id_hashes=tuple(sorted(found.keys)),
            subprocessor=self.kit.deps.subprocessors.processor.id,
            details={
                "reason": reason,
                "request_id": inp.request_id,
                "propagated": result.propagated,
                "destinations": ",".join(f"{d.connector}/{d.stream}" for d in result.destinations),
                **({"fields": fields} if fields else {}),  # names of corrected fields, never values
            },
        )
        (index,) = self.kit.ledger(inp.tenant).append([event])
        self.kit.ledger(inp.tenant).checkpoint(self.deps.signer)
        return index

    def _locate(self, inp: DsrInput) -> _Findings:
        deps = self.deps
        email, ids = open_subject(deps.vault, inp)
        tenant = inp.tenant
        ps = deps.pseudonymizer
        needles = {i.casefold() for i in ids}
        pseudonyms: set[str] = set()
        if email:
            needles.add(email.casefold())
            pseudonyms = {
                p for v in {email, email.strip(), email.lower()} if (p := ps.pseudonymize(tenant, v))
            }
        match = _Matcher(needles, pseudonyms)
        given_keys = {ps.keyed_hash(tenant, i) for i in ids}
        found = _Findings()
        with deps.engine.connect() as conn:
            sync_ids = dsr_store.sync_ids(conn, tenant)
        for sync_id in sync_ids:
            try:
                ctx = self.kit.context(tenant, sync_id)
            except CrmhubError as exc:
                found.notes.append(f"sync {sync_id} skipped: {type(exc).__name__} ({exc.code or 'config'})")
                continue
            s = _SyncFindings(ctx, keys=set(given_keys))
            if inp.scan_sources:
                self._scan_source(s, match, found)
            self._scan_staging(s, match)
            self._scan_dead_letters(s, match)
            with deps.engine.connect() as conn:
                s.id_map = id_map_store.lookup_id_map(conn, tenant, sync_id, sorted(s.keys))
            found.syncs.append(s)
            activity.heartbeat(f"located in {sync_id}")
        found.trace = self._trace(tenant, found.keys)
        return found

    def _scan_source(self, s: _SyncFindings, match: _Matcher, found: _Findings) -> None:
        ctx, deps = s.ctx, self.deps
        tenant, stream = ctx.tenant.id, ctx.spec.source_stream
        fields = list(ctx.instruction.allowed_fields.get(stream, []))
        try:
            connector = deps.connector_factory(ctx.spec.source_connection_id)
        except CrmhubError as exc:
            found.notes.append(f"source of sync {ctx.spec.id} not searched: {type(exc).__name__}")
            return
        try:
            pk = self.kit.stream_spec(connector, ctx.spec.source_connection_id, stream).primary_key
            if pk not in fields:
                fields.append(pk)
            state = StreamState(mode=ReadMode.FULL, include_deleted=False)
            pages = 0
            while True:
                page = connector.read_page(stream, state, self.page_size, fields)
                for rec in page.records:
                    if match(rec) and rec.get(pk) not in (None, ""):
                        rid = str(rec[pk])
                        s.source_ids.append(rid)
                        s.source_records.append(rec)
                        s.keys.add(deps.pseudonymizer.keyed_hash(tenant, rid))
                pages += 1
                activity.heartbeat(f"{ctx.spec.id}: source page {pages}")
                if not page.has_more:
                    break
                state = page.next_state
        finally:
            connector.close()

    def _scan_staging(self, s: _SyncFindings, match: _Matcher) -> None:
        ctx, deps = s.ctx, self.deps
        with deps.engine.connect() as conn:
            names = dsr_store.tenant_staged_parts(conn, ctx.tenant.id, ctx.spec.id)
        for batch_id, number in names:
            with deps.engine.connect() as conn:
                parts = staging_store.get_staged(conn, ctx.tenant.id, batch_id, part=number)
            if not parts:
                continue
            keys, records, _ = open_part(deps.vault, ctx, parts[0])
            hits = [i for i, rec in enumerate(records) if match(rec) or keys[i] in s.keys]
            if hits:
                s.staging[(batch_id, number)] = hits
                for i in hits:
                    s.keys.add(keys[i])
                    s.staged_records.append(
                        {
                            "sync_id": ctx.spec.id,
                            "run_id": parts[0].run_id,
                            "batch_id": batch_id,
                            "part": number,
                            "key": keys[i],
                            "record": records[i],
                        }
                    )
            activity.heartbeat(f"{ctx.spec.id}: staging {batch_id}/{number}")

    def _scan_dead_letters(self, s: _SyncFindings, match: _Matcher) -> None:
        ctx, deps = s.ctx, self.deps
        with deps.engine.connect() as conn:
            letters = dead_letter_store.list_dead_letters(conn, ctx.tenant.id, ctx.spec.id, limit=1_000_000)
        for d in letters:
            body = json.loads(
                deps.vault.open(
                    ctx.tenant.id,
                    d.sealed_record,
                    dataset="dead-letter",
                    object_id=d.id,
                    purpose=ctx.instruction.purpose,
                )
            )
            record = body.get("record") or {}
            if match(record) or d.record_key_hash in s.keys:
                s.keys.add(d.record_key_hash)
                s.letters.append(
                    {
                        "sync_id": ctx.spec.id,
                        "id": d.id,
                        "run_id": d.run_id,
                        "kind": body.get("kind"),
                        "error_code": d.error_code,
                        "created": format_timestamp(d.created),
                        "key": d.record_key_hash,
                        "record": record,
                        "vendor_message": body.get("vendor_message"),
                    }
                )

    def _trace(self, tenant: str, keys: set[str]) -> list[dict[str, Any]]:
        """Every ledger event that names one of ``keys``: where the subject's records went."""
        if not keys:
            return []
        with self.deps.engine.connect() as conn:
            size = ledger_store.head_size(conn, tenant)
            rows = ledger_store.read_event_rows(conn, tenant, 0, size)
        trace = []
        for r in rows:
            e = LineageEvent.from_canonical(r.event)
            hits = keys.intersection(e.record_id_hashes)
            if not hits:
                continue
            trace.append(
                {
                    "index": r.idx,
                    "kind": e.kind.value,
                    "timestamp": format_timestamp(e.timestamp),
                    "run_id": e.run_id,
                    "sync_id": e.sync_id,
                    "purpose": e.purpose,
                    "instruction_version": e.instruction_version,
                    "source": f"{e.source.namespace}/{e.source.name}" if e.source else None,
                    "destination": (
                        f"{e.destination.namespace}/{e.destination.name}" if e.destination else None
                    ),
                    "subprocessor": e.subprocessor,
                    "region_from": e.region_from,
                    "region_to": e.region_to,
                    "transfer_mechanism": e.transfer_mechanism.value if e.transfer_mechanism else None,
                    "record_key_hashes": sorted(hits),
                }
            )
        return trace
