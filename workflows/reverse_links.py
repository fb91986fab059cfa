"""Relationships read at the source (issue 14, HubSpot → Salesforce): the pull side.

**Declared in the mapping** with the relationship as the *source*: ``{"@companies": "AccountId"}``
on a HubSpot contacts → Salesforce Contact sync sets each contact's ``AccountId`` to the Salesforce
Account its HubSpot primary company became. ``@companies`` is a field of the instruction like any
other (``allowed_fields.contacts`` lists it, or the plan is refused, rule ``mapping``; it must not
be pseudonymized), and exactly one sync reads ``companies`` from the same source into the same
destination connection (the *parent sync*: :func:`workflows.associations.relationships`).

**Read with the records.** Each page the pull reads is completed before governance sees it: the
children's parents are read in one associations batch read per 1,000 records
(:meth:`connectors.base.Connector.read_links`; HubSpot ``POST /crm/v4/associations/{from}/{to}/batch/read``)
and set as ``@companies`` — the primary company's id, or ``None``. The push resolves it through
the parent sync's id map and writes it in the upsert itself (no call of its own); a child whose
parent is not synced yet waits in the deferral queue and the parent's push sets its lookup
(:mod:`workflows.associations`).

**Association changes found incrementally.** HubSpot does not move a record's
``lastmodifieddate`` / ``hs_lastmodifieddate`` when only an association changes (Airbyte's HubSpot
source, airbytehq/airbyte#27199 and #14390: associations are missed by incremental syncs; the
sandbox emulates it — a guess, HubSpot's docs say neither way), so an incremental read alone never
sees a re-parented contact. Each pull that reads associations therefore keeps a **snapshot** per
child — the child's source id (sealed with the tenant's key: never stored in clear) and the keyed
hash of the parent it had — in ``association_links`` under the field ``@companies/source``. The
first batch of every incremental run re-reads the associations of the :data:`SWEEP_LIMIT`
children checked longest ago (``ceil(min(children, SWEEP_LIMIT) / 1,000)`` batch reads), compares
them with the snapshot and stages a *relink* record (the child's key, ``@companies``, no other
field) for each one that changed; the push sets those children's lookups through the destination's
batch update (Salesforce Collections, 200 a call) or defers them. A portal of ``n`` children is
fully re-checked every ``ceil(n / SWEEP_LIMIT)`` incremental runs: with the default a re-parenting
among 10,000 children is carried by the next incremental run, at 10 read calls a run.
Children read by the run's own pages are fresh and rotate to the back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from connectors.base import Connector
from schemas.connector import Page, Record
from store import associations as links_store
from store import id_map as id_map_store
from workflows.associations import reverse_declared
from workflows.context import ActivityKit, SyncContext
from workflows.sealed_text import open_text, seal_text

__all__ = ["RELINK", "SNAPSHOT", "SWEEP_LIMIT", "SourceLinks", "is_relink"]

READ_BATCH = 1_000
"""Records whose relationships one pull reads together (the associations batch read's maximum)."""
SWEEP_LIMIT = 10_000
"""Children whose associations an incremental run re-reads (oldest checked first)."""
RELINK = "@relink"
"""Marks a staged record that only carries relationships (an association change found by the sweep)."""
SNAPSHOT = "/source"
"""Suffix of the ``association_links`` field holding a relationship's source snapshot."""


def is_relink(record: Record) -> bool:
    """Is a staged record a relink (relationships only, no upsert)?"""
    return record.get(RELINK) is True


@dataclass(frozen=True, slots=True)
class _Rel:
    field: str  # "@companies"
    parent: str  # the parent's source stream (companies)


@dataclass
class SourceLinks:
    """Reads one pull's relationships at the source (see the module docstring)."""

    kit: ActivityKit
    ctx: SyncContext
    connector: Connector
    key_field: str  # the source primary key (hs_object_id)
    rels: tuple[_Rel, ...]
    calls: int = 0
    read: int = 0  # records whose relationships were read with their page
    checked: int = 0  # children the sweep re-read
    changed: int = 0  # of which their relationship had changed
    moved: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)  # (field, snapshot row)

    @classmethod
    def of(
        cls, kit: ActivityKit, ctx: SyncContext, connector: Connector, key_field: str
    ) -> SourceLinks | None:
        if links_store.is_junction(ctx.spec.source_stream):  # pairs: workflows.pair_source
            return None
        rels = tuple(_Rel(f, p) for f, p, _ in reverse_declared(ctx.spec.mapping))
        return cls(kit, ctx, connector, key_field, rels) if rels else None

    @staticmethod
    def vendor_fields(fields: list[str]) -> list[str]:
        """The fields a page read asks the vendor for (relationships are read apart)."""
        return [f for f in fields if not links_store.is_relationship(f)]

    def _parents(self, rel: _Rel, ids: list[str]) -> dict[str, str | None]:
        calls = int(getattr(self.connector, "calls", 0))
        found = self.connector.read_links(self.ctx.spec.source_stream, rel.parent, ids) if ids else {}
        self.calls += int(getattr(self.connector, "calls", 0)) - calls
        return {i: next(iter(found.get(i) or []), None) for i in ids}

    def _seal(self, child_key: str, source_id: str) -> str:
        return seal_text(self.kit, self.ctx, self._dataset(), child_key, source_id)

    def _open(self, child_key: str, sealed: str) -> str:
        return open_text(self.kit, self.ctx, self._dataset(), child_key, sealed)

    def _dataset(self) -> str:
        return f"{self.ctx.spec.id}{SNAPSHOT}"

    def _hash(self, value: str | None) -> str:
        return self.kit.deps.pseudonymizer.keyed_hash(self.ctx.tenant.id, value) if value else ""

    @staticmethod
    def wants_more(pages: Sequence[Page]) -> bool:
        """Should the pull read another page before reading these pages' relationships?"""
        return sum(len(p.records) for p in pages) < READ_BATCH

    def _source_id(self, record: Record) -> str:
        return str(record.get(self.key_field) or record.get("id") or "")

    def enrich(self, pages: Sequence[Page]) -> list[Page]:
        """``pages`` with each record's relationships (one batch read per :data:`READ_BATCH`
        records and relationship, the reads counted in the last page); the snapshot of what was
        read is kept for the sweep."""
        ids = [i for p in pages for i in map(self._source_id, p.records) if i]
        if not ids:
            return list(pages)
        calls = self.calls
        tenant, now = self.ctx.tenant.id, self.kit.deps.clock()
        out = [dataclasses.replace(p, records=[dict(r) for r in p.records]) for p in pages]
        for rel in self.rels:
            parents = self._parents(rel, ids)
            rows = []
            for rec in (r for p in out for r in p.records):
                sid = self._source_id(rec)
                if sid:
                    rec[rel.field] = parents.get(sid)
                    key = self._hash(sid)
                    rows.append((key, self._seal(key, sid), self._hash(rec[rel.field])))
            with self.kit.deps.engine.begin() as conn:
                links_store.set_links(conn, tenant, self.ctx.spec.id, rel.field + SNAPSHOT, rows, now=now)
        self.read += len(ids)
        out[-1] = dataclasses.replace(out[-1], calls=out[-1].calls + self.calls - calls)
        return out

    def sweep(self, suppressed: frozenset[str]) -> tuple[list[str], list[Record]]:
        """Re-read the relationships of the children checked longest ago; returns the relink
        records (keys, records) of those that changed (their snapshot is written by :meth:`settle`)."""
        tenant, sync_id, now = self.ctx.tenant.id, self.ctx.spec.id, self.kit.deps.clock()
        keys: list[str] = []
        records: list[Record] = []
        for rel in self.rels:
            field = rel.field + SNAPSHOT
            with self.kit.deps.engine.connect() as conn:
                rows = links_store.stalest_links(conn, tenant, sync_id, field, SWEEP_LIMIT)
                mapped = id_map_store.lookup_id_map(conn, tenant, sync_id, [k for k, _, _ in rows])
            gone = [k for k, _, _ in rows if k not in mapped]  # no longer at the destination: forget it
            live = [(k, self._open(k, sealed), old) for k, sealed, old in rows if k in mapped]
            parents = self._parents(rel, [sid for _, sid, _ in live])
            unchanged: list[tuple[str, str, str]] = []
            for key, sid, old in live:
                parent = parents.get(sid)
                row = (key, self._seal(key, sid), old if key in suppressed else self._hash(parent))
                if row[2] == old:  # (a suppressed subject's change is not carried)
                    unchanged.append(row)
                    continue
                self.moved.append((field, *row))
                keys.append(key)
                records.append({rel.field: parent, RELINK: True})
            self.checked += len(live)
            self.changed += len(live) - len(unchanged)
            with self.kit.deps.engine.begin() as conn:
                links_store.set_links(
                    conn, tenant, sync_id, field, unchanged, now=now
                )  # checked: to the back
                links_store.drop_links(conn, tenant, sync_id, field, gone)
        return keys, records

    def settle(self, now: datetime) -> None:
        """Write the snapshot of the changed children, once their relink records are staged."""
        by_field: dict[str, list[tuple[str, str, str]]] = {}
        for field, key, sealed, parent in self.moved:
            by_field.setdefault(field, []).append((key, sealed, parent))
        with self.kit.deps.engine.begin() as conn:
            for field, rows in by_field.items():
                links_store.set_links(conn, self.ctx.tenant.id, self.ctx.spec.id, field, rows, now=now)
        self.moved = []

    def counts(self) -> dict[str, int]:
        """The pull event's relationship counts."""
        out = {"links_read": self.read, "link_calls": self.calls, "links_checked": self.checked,
               "links_changed": self.changed}  # fmt: skip
        return {k: v for k, v in out.items() if v}
