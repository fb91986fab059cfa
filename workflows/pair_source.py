"""Association streams read at the source (issue 14, HubSpot → Salesforce): the pull side of a sync
whose *source* stream is ``deals/contacts`` (each record one deal↔contact pair,
:mod:`connectors.hubspot.pairs`), pushed as Salesforce ``OpportunityContactRole`` rows
(:mod:`workflows.pair_records`).

**Vanished pairs are deletes.** The connector's pages list the deals they read in full
(:attr:`schemas.connector.Page.owners`); :meth:`PairSource.track` compares each deal's pairs with the
**snapshot** of the pairs it had — per pair, in ``association_links`` under :data:`PAIRS`: the pair's
keyed hash, its deal's keyed hash and the pair id sealed with the tenant's key (never stored in
clear) — and adds every vanished pair to the page's ``deleted_ids``. Each deal read is also kept under
:data:`OWNERS` (its id sealed) with the time it was checked.

**Association changes found incrementally.** HubSpot moves no deal's modification date when only an
association changes (:mod:`workflows.reverse_links`), so the first batch of every incremental run
also re-reads the contacts of the :data:`SWEEP_LIMIT` deals checked longest ago
(``ceil(min(deals, SWEEP_LIMIT) / 1,000)`` associations batch reads,
:meth:`connectors.base.Connector.read_links`) and stages the pairs that are new and the deletes of
those that vanished — nothing for an unchanged deal. Counted in the ``pull`` event as
``links_checked`` (deals re-read), ``links_changed`` (pairs staged or deleted by the sweep) and
``link_calls``.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

from connectors.base import Connector
from schemas.connector import Page, Record, StreamState
from store import associations as links_store
from workflows.context import ActivityKit, SyncContext
from workflows.reverse_links import READ_BATCH, SWEEP_LIMIT

__all__ = ["OWNERS", "PAIRS", "PairSource", "pair_record"]

PAIRS = "@pairs/source"
"""``association_links`` field of the pair snapshot: (pair key hash, deal key hash, sealed pair id)."""
OWNERS = "@owners/source"
"""``association_links`` field of the deals checked: (deal key hash, sealed deal id, "")."""
KEY = "id"
Row = tuple[str, str, str]


def pair_record(owner: str, other: str, owner_id: str, other_id: str) -> Record:
    """A pair record as an association stream carries it (:mod:`connectors.hubspot.pairs`)."""
    return {KEY: f"{owner_id}:{other_id}", f"@{owner}": owner_id, f"@{other}": other_id}


@dataclass
class PairSource:
    """Tracks one pull's pairs against the snapshot (see the module docstring)."""

    kit: ActivityKit
    ctx: SyncContext
    connector: Connector
    owner: str  # deals
    other: str  # contacts
    calls: int = 0
    checked: int = 0
    changed: int = 0
    # snapshot writes of pages tracked, not yet staged: (new pairs, vanished pairs, deals checked)
    unsettled: list[tuple[list[Row], list[str], list[Row]]] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, kit: ActivityKit, ctx: SyncContext, connector: Connector) -> PairSource | None:
        owner, _, other = ctx.spec.source_stream.partition(links_store.JUNCTION_SEPARATOR)
        return cls(kit, ctx, connector, owner, other) if owner and other else None

    def _hash(self, value: str) -> str:
        return self.kit.deps.pseudonymizer.keyed_hash(self.ctx.tenant.id, value)

    def _seal(self, key: str, value: str) -> str:
        sealed = self.kit.deps.vault.seal(
            self.ctx.tenant.id, value.encode(), dataset=f"{self.ctx.spec.id}{PAIRS}", object_id=key,
            purpose=self.ctx.instruction.purpose,
        )  # fmt: skip
        return base64.b64encode(sealed).decode()

    def _open(self, key: str, sealed: str) -> str:
        return self.kit.deps.vault.open(
            self.ctx.tenant.id, base64.b64decode(sealed), dataset=f"{self.ctx.spec.id}{PAIRS}",
            object_id=key, purpose=self.ctx.instruction.purpose,
        ).decode()  # fmt: skip

    def track(self, page: Page, *, only_changes: bool = False) -> Page:
        """``page`` with the vanished pairs of its owners as deletes (``only_changes``: and only its
        new pairs as records); the snapshot is brought up to date by :meth:`settle`."""
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        owners = {self._hash(o): o for o in page.owners}
        current = {self._hash(str(r.get(KEY))): r for r in page.records if r.get(KEY)}
        with self.kit.deps.engine.connect() as conn:
            had = links_store.links_to(conn, tenant, sync_id, PAIRS, list(owners))
        known = {k for k, _, _ in had}
        vanished = [(k, self._open(k, sealed)) for k, _, sealed in had if k not in current]
        fresh = [(k, r) for k, r in current.items() if k not in known]
        rows = [(k, self._hash(str(r[f"@{self.owner}"])), self._seal(k, str(r[KEY]))) for k, r in fresh]
        self.unsettled.append(
            (rows, [k for k, _ in vanished], [(h, self._seal(h, o), "") for h, o in owners.items()])
        )
        records = [r for _, r in fresh] if only_changes else page.records
        deleted = [*page.deleted_ids, *(i for _, i in vanished)]
        if only_changes:
            self.changed += len(records) + len(vanished)
        return dataclasses.replace(page, records=records, deleted_ids=deleted)

    def settle(self) -> None:
        """Write the snapshot of the pages tracked, once their pairs and deletes are staged (a retry
        reads unstaged pages again and must find the same vanished pairs)."""
        tenant, sync_id, now = self.ctx.tenant.id, self.ctx.spec.id, self.kit.deps.clock()
        with self.kit.deps.engine.begin() as conn:
            for rows, vanished, owners in self.unsettled:
                links_store.set_links(conn, tenant, sync_id, PAIRS, rows, now=now)
                links_store.drop_links(conn, tenant, sync_id, PAIRS, vanished)
                links_store.set_links(conn, tenant, sync_id, OWNERS, owners, now=now)
        self.unsettled = []

    def sweep(self, state: StreamState) -> Page | None:
        """Re-read the pairs of the deals checked longest ago; a page of the new pairs and the
        vanished ones (None when nothing was checked)."""
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        with self.kit.deps.engine.connect() as conn:
            rows = links_store.stalest_links(conn, tenant, sync_id, OWNERS, SWEEP_LIMIT)
        ids = [self._open(h, sealed) for h, sealed, _ in rows]
        if not ids:
            return None
        before = int(getattr(self.connector, "calls", 0))
        found: dict[str, list[str]] = {}
        for start in range(0, len(ids), READ_BATCH):
            found |= self.connector.read_links(self.owner, self.other, ids[start : start + READ_BATCH])
        calls = int(getattr(self.connector, "calls", 0)) - before
        self.calls += calls
        self.checked += len(ids)
        records = [
            pair_record(self.owner, self.other, o, c) for o in ids for c in dict.fromkeys(found.get(o) or [])
        ]
        page = Page(records, state, True, calls=calls, owners=ids)
        return self.track(page, only_changes=True)

    def counts(self) -> dict[str, int]:
        """The pull event's sweep counts."""
        out = {"link_calls": self.calls, "links_checked": self.checked, "links_changed": self.changed}
        return {k: v for k, v in out.items() if v}
