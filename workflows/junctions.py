"""Junction rows as associations (issue 14): Salesforce ``OpportunityContactRole`` → HubSpot
deal↔contact associations.

**Declared** by a sync whose destination stream is an *association stream* ``<owner>/<other>``
(``deals/contacts``: HubSpot's ``/crm/v4/associations/deals/contacts`` pair) and whose mapping
names both sides as relationships::

    source_stream: OpportunityContactRole
    destination_stream: deals/contacts
    mapping: {OpportunityId: "@deals", ContactId: "@contacts"}

Each source row is one association, not a record: the deal its ``OpportunityId`` became, linked
to the contact its ``ContactId`` became (HubSpot deal→contact type 3). Both lookups are read like
any mapped field, so the instruction must allow them (``allowed_fields.OpportunityContactRole``) or
the plan is refused (rule ``mapping``); neither may be pseudonymized, and each side needs exactly
one parent sync writing it through the same connection (Opportunity → deals, Contact → contacts:
:func:`workflows.associations.check_relationships`, the same check as any relationship). A
``Role: "@label"`` entry labels each pair with the row's role (a HubSpot USER_DEFINED association
label, made when missing; a role change moves the label; an empty role leaves the pair unlabeled:
:mod:`workflows.junction_labels`). ``IsPrimary`` is not written: HubSpot's deal→contact pair has no
primary type.

**Pushed** (:class:`Junction`, in place of the upsert): both ends are resolved through their parent
syncs' id maps; a new pair is created, a changed one (``ContactId`` edited) archives the old pair and
creates the new, an unchanged one costs nothing; a row deleted at the source (or whose lookup was
cleared) archives its pair — in every write mode, as a cleared lookup unlinks (an association is
no record a write mode keeps) — unless another live row of the sync holds the same pair (Salesforce
accepts two roles of one contact on one opportunity). Written pairs live in ``association_links``
(field :data:`PAIR`: deal id, contact id) and the keyed hashes of the ends each row wants under
:data:`WANTED`. A row with an end not synced yet waits in the deferral queue on that end; the push
of the parent sync that lands it resolves the row again (:func:`release_all`) and links it or queues
it on the other end. A reconciliation (:mod:`workflows.reconcile_activities`) compares the source's
live ids with the :data:`WANTED` rows and unlinks the vanished ones (purged deletes). All writes go
through the connector's batch association endpoints
(:meth:`~connectors.base.Connector.write_links`); counted as ``linked``/``unlinked``/``deferred``/
``released``/``link_failed``/``link_calls``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import Connector
from schemas.connector import Link, Record
from schemas.errors import ConfigError
from store import associations as links_store
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store.engine import Connection
from workflows.associations import DEFERRAL_LIMIT, LinkCounts, Relationship, relationships
from workflows.associations import release as release_children
from workflows.context import ActivityKit, SyncContext
from workflows.junction_labels import LABELED, ROLE_LIMIT, Roles
from workflows.pair_records import RECORD as PAIR_RECORD
from workflows.pair_records import WANTED as PAIR_WANTED
from workflows.pair_records import TwoEnds, waiting_rows
from workflows.pair_records import release as release_pairs
from workflows.released_letters import UPSERT, forget, keep, rehomed, waiting_ids

__all__ = [
    "PAIR",
    "SEPARATOR",
    "WANTED",
    "Junction",
    "PartResult",
    "check_junction",
    "is_junction",
    "release_all",
]

SEPARATOR = links_store.JUNCTION_SEPARATOR
is_junction = links_store.is_junction
PAIR = "@pair"
"""``association_links`` field of a junction row's written pair (deal id, contact id)."""
WANTED = PAIR_WANTED
"""``association_links`` field of the keyed hashes of the ends a junction row points at."""

LetterFn = Callable[[str, int, str, Record, str, str | None], dead_letter_store.DeadLetter]


def _ends(spec_stream: str, rels: Sequence[Relationship]) -> tuple[Relationship, Relationship]:
    """(owner, other) relationships of a junction sync writing ``spec_stream``."""
    owner, _, other = spec_stream.partition(SEPARATOR)
    by_parent = {r.parent_stream: r for r in rels}
    if owner not in by_parent or other not in by_parent or len(rels) != 2:
        raise ConfigError(
            f"a sync into {spec_stream} links rows to both ends: map one field to @{owner} and one to "
            f"@{other} (e.g. OpportunityId: '@{owner}', ContactId: '@{other}'), and no other relationship",
            code="JUNCTION_ENDS",
        )
    return by_parent[owner], by_parent[other]


def check_junction(conn: Connection, ctx: SyncContext) -> None:
    """Plan-time: a junction sync declares exactly its two ends (the ends' parent syncs are checked
    by :func:`workflows.associations.check_relationships`)."""
    if is_junction(ctx.spec.destination_stream):
        _ends(ctx.spec.destination_stream, relationships(conn, ctx))


def _hash(keyed_hash: Callable[[str, str], str], tenant: str, value: object) -> str | None:
    return None if value is None or str(value).strip() == "" else keyed_hash(tenant, str(value))


@dataclass(frozen=True, slots=True)
class _Row:
    index: int  # in its part (a deleted row: -1 - its position among the deletes)
    key: str  # keyed hash of the row's source id
    owner: str | None  # keyed hash of the owner end's source id (OpportunityId); None: cleared
    other: str | None  # ... of the other end's (ContactId)
    record: Record | None = None  # as staged (in its letter, so a retry can read it again)
    role: str | None = None  # the label its pair carries (workflows.junction_labels); None: unlabeled


class PushLike(Protocol):
    """The push progress fields a junction part adds to (:class:`workflows.push.PushProgress`)."""

    created: int
    updated: int
    failed: int
    calls: int
    resolved: int
    resolved_runs: list[str]
    links: LinkCounts


@dataclass(frozen=True, slots=True)
class PartResult:
    """What one junction part did: ``paired`` rows' pairs are at the destination (``links.linked``
    of them new), ``waiting`` rows are queued; ``resolved``: (letter, run) of their refusals ended."""

    links: LinkCounts
    paired: list[str]
    waiting: list[str]
    resolved: list[tuple[str, str]]

    @property
    def accepted(self) -> list[str]:
        return self.paired + self.waiting

    def progress(self, p: PushLike) -> dict[str, object]:
        """``p``'s fields with this part added (a ``model_copy`` update)."""
        links = self.links
        return {
            "created": p.created + links.linked,
            "updated": p.updated + len(self.paired) - links.linked,
            "failed": p.failed + links.failed,
            "calls": p.calls + links.calls,
            "resolved": p.resolved + len(self.resolved),
            "resolved_runs": sorted({*p.resolved_runs, *(run for _, run in self.resolved)}),
            "links": p.links.plus(links),
        }


@dataclass(frozen=True, slots=True)
class Junction(TwoEnds):
    """Pushes one junction sync's rows as associations (see the module docstring)."""

    @staticmethod
    def ends(conn: Connection, ctx: SyncContext) -> tuple[Relationship, Relationship]:
        return _ends(ctx.spec.destination_stream, relationships(conn, ctx))

    def push(
        self, keys: Sequence[str], records: Sequence[Record], deleted: Sequence[str], letter: LetterFn
    ) -> PartResult:
        """Link one part's rows and unlink its deleted ones."""
        tenant, keyed_hash = self.ctx.tenant.id, self.kit.deps.pseudonymizer.keyed_hash
        roles = Roles(self.kit, self.ctx)
        rows = [
            _Row(i, k, _hash(keyed_hash, tenant, r.get(self.owner.field)),
                 _hash(keyed_hash, tenant, r.get(self.other.field)), r, roles.of(r))
            for i, (k, r) in enumerate(zip(keys, records, strict=True))
        ]  # fmt: skip
        rows += [_Row(-1 - n, k, None, None) for n, k in enumerate(deleted)]
        why = f"its {roles.field} is longer than {ROLE_LIMIT} bytes, the longest label crmhub keeps"
        long = {r.key for r in rows if r.role and len(r.role.encode()) > ROLE_LIMIT}
        refused = [
            letter(UPSERT, r.index, r.key, r.record or {}, "LABEL_TOO_LONG", why)
            for r in rows
            if r.key in long
        ]
        rows = [r for r in rows if r.key not in long]  # refused: left as they are
        wanted = [(r.key, r.owner or "", r.other or "") for r in rows if r.owner and r.other]
        with self.kit.deps.engine.begin() as conn:
            links_store.set_links(conn, tenant, self.ctx.spec.id, WANTED, wanted, now=self.kit.deps.clock())
            links_store.drop_links(
                conn, tenant, self.ctx.spec.id, WANTED, [r.key for r in rows if not (r.owner and r.other)]
            )
            if roles.field:
                roles.keep(conn, [(r.key, r.role if r.owner and r.other else None) for r in rows])
            dead_letter_store.add_dead_letters(conn, refused)
        counts, linked, waiting = self.settle(rows, letter)
        live = set(keys)
        linked = [k for k in linked if k in live]
        with self.kit.deps.engine.begin() as conn:  # accepted at last: the earlier refusals end
            resolved = dead_letter_store.resolve_dead_letters(
                conn, tenant, self.ctx.spec.id, linked + waiting
            )
        return PartResult(counts.plus(LinkCounts(failed=len(refused))), linked, waiting, resolved)

    def settle(self, rows: Sequence[_Row], letter: LetterFn) -> tuple[LinkCounts, list[str], list[str]]:
        """Resolve ``rows``' ends through the parent syncs' id maps, write what changed against the
        pairs (and labels) they have, queue those with an end not synced yet; returns the counts, the
        keys whose pair is at the destination and the keys queued."""
        tenant, sync_id, now = self.ctx.tenant.id, self.ctx.spec.id, self.kit.deps.clock()
        roles = Roles(self.kit, self.ctx)
        keys = [r.key for r in rows]
        with self.kit.deps.engine.connect() as conn:
            have = links_store.links_of(conn, tenant, sync_id, PAIR, keys)
            labeled = links_store.links_of(conn, tenant, sync_id, LABELED, keys) if roles.field else {}
            owners = id_map_store.lookup_id_map(
                conn, tenant, self.owner.parent_sync_id, [r.owner for r in rows if r.owner]
            )
            others = id_map_store.lookup_id_map(
                conn, tenant, self.other.parent_sync_id, [r.other for r in rows if r.other]
            )
            waiting = links_store.count_deferred(conn, tenant, sync_id, excluding=keys)
        room = DEFERRAL_LIMIT - waiting
        plan = _Plan()
        deferred: list[links_store.Deferred] = []
        letters: list[dead_letter_store.DeadLetter] = []
        for r in rows:
            old = have.get(r.key)
            deal = owners.get(r.owner) if r.owner else None
            contact = others.get(r.other) if r.other else None
            new = (deal, contact) if deal and contact else None
            if new is not None and new == old:
                had = labeled.get(r.key)
                if (had[1] if had else None) == roles.hash(r.role):
                    plan.ok.append(r.key)
                else:  # the role changed: the pair's label moves
                    plan.relabel.append((r.key, new, had[0] if had else None))
                continue
            if old is not None:
                plan.archive.append((r.key, old))
            if new is not None:
                plan.create.append((r.key, new))
                continue
            if not (r.owner and r.other):  # deleted or cleared: unlinked, nothing waits
                continue
            row = (r.index, r.key, r.owner, r.other)
            room = self.wait(
                PAIR,
                row,
                deal is not None,
                r.record or {},
                letter,
                room=room,
                deferred=deferred,
                letters=letters,
            )
        with self.kit.deps.engine.connect() as conn:  # a pair (label) another row still holds stays
            pairs = {p for _, p in plan.archive} | {p for _, p, _ in plan.relabel}
            moving = {k for k, _ in plan.archive}
            holders = _holders(conn, tenant, sync_id, pairs, moving, {k for k, _, _ in plan.relabel})
        by_key = {r.key: r for r in rows}
        counts, done, relabeled, ids = self._write(plan, holders, labeled, by_key, letter, letters)
        gone = [k for k, _ in plan.archive if k not in done]
        quiet = [k for k, _, _ in plan.relabel if k not in relabeled and not by_key[k].role]
        carried = [(k, ids[role], roles.hash(role) or "")
                   for k in (*done, *relabeled) if (role := by_key[k].role) and role in ids]  # fmt: skip
        with self.kit.deps.engine.begin() as conn:
            links_store.drop_links(conn, tenant, sync_id, PAIR, gone)
            links_store.set_links(conn, tenant, sync_id, PAIR,
                                  [(k, d, c) for k, (d, c) in plan.create if k in done], now=now)  # fmt: skip
            if roles.field:
                unlabeled = [*gone, *quiet, *(k for k in (*done, *relabeled) if not by_key[k].role)]
                links_store.drop_links(conn, tenant, sync_id, LABELED, unlabeled)
                links_store.set_links(conn, tenant, sync_id, LABELED, carried, now=now)
            links_store.drop_deferred(conn, tenant, sync_id, PAIR, keys)
            links_store.defer(conn, tenant, deferred, now=now)
            queued = {d.child_key_hash for d in deferred}  # a waiting row's source id, for its letter
            keep(self.kit, self.ctx, conn, PAIR, [(k, by_key[k].record or {}) for k in queued])
            forget(self.ctx, conn, PAIR, [k for k in keys if k not in queued])
            dead_letter_store.add_dead_letters(conn, letters)
        more = LinkCounts(unlinked=len(gone), deferred=len(deferred), failed=len(letters) - counts.failed)
        ok = plan.ok + sorted(done) + sorted(relabeled) + quiet
        return counts.plus(more), ok, [d.child_key_hash for d in deferred]

    def _write(
        self,
        plan: _Plan,
        holders: dict[tuple[str, str], set[str]],
        labeled: dict[str, tuple[str, str]],
        rows: dict[str, _Row],
        letter: LetterFn,
        letters: list[dead_letter_store.DeadLetter],
    ) -> tuple[LinkCounts, set[str], set[str], dict[str, str]]:
        """One write_links call: the pairs to archive (``parent_id`` None; a pair another row holds
        stays, only its leaving row's label goes), to create (with their label) and to relabel.
        Returns the counts, the keys whose new pair was created, those whose label moved, and the
        destination's id of each label name written."""
        made = {p for _, p in plan.create}
        links: list[Link] = []
        keyed: list[tuple[str, str]] = []  # (kind, key) of each link
        for k, (d, c) in plan.archive:
            if (d, c) not in holders and (d, c) not in made:
                links.append(Link(d, None, c))
                keyed.append(("archive", k))
            elif (tid := labeled.get(k, ("", ""))[0]) and tid not in holders.get((d, c), set()):
                links.append(Link(d, c, unlabel=tid))
                keyed.append(("unlabel", k))
        for k, (d, c) in plan.create:
            links.append(Link(d, c, label=rows[k].role))
            keyed.append(("create", k))
        for k, (d, c), old in plan.relabel:
            off = old if old and old not in holders.get((d, c), set()) else None
            if rows[k].role or off:
                links.append(Link(d, c, label=rows[k].role, unlabel=off))
                keyed.append(("relabel", k))
        if not links:
            return LinkCounts(), set(), set(), {}
        owner, _, other = self.ctx.spec.destination_stream.partition(SEPARATOR)
        result = self.connector.write_links(owner, other, links)
        written: dict[str, set[str]] = {"create": set(), "relabel": set()}
        for n, (kind, key) in enumerate(keyed):
            if n in result.failed:
                code, message = result.failed[n]
                r = rows[key]
                letters.append(letter(UPSERT, r.index, key, r.record or {}, code, message))
            elif kind in written:
                written[kind].add(key)
        done, moved = written["create"], written["relabel"]
        counts = LinkCounts(
            linked=len(done), failed=len(result.failed), calls=result.calls, relabeled=len(moved)
        )
        return counts, done, moved, result.labels


@dataclass(slots=True)
class _Plan:
    """What a settle writes: keys unchanged, (key, pair) to archive and to create, (key, pair, label
    id it carried) whose label moves."""

    ok: list[str] = field(default_factory=list)
    archive: list[tuple[str, tuple[str, str]]] = field(default_factory=list)
    create: list[tuple[str, tuple[str, str]]] = field(default_factory=list)
    relabel: list[tuple[str, tuple[str, str], str | None]] = field(default_factory=list)


def _holders(
    conn: Connection, tenant: str, sync_id: str, pairs: set[tuple[str, str]], leaving: set[str],
    relabeled: set[str],
) -> dict[tuple[str, str], set[str]]:  # fmt: skip
    """Of ``pairs``, those a row of the sync that stays on it (not among ``leaving``) holds, with the
    label ids such rows' pairs keep (a ``relabeled`` row's old label leaves with it)."""
    if not pairs:
        return {}
    rows = [
        (k, (d, c))
        for k, d, c in links_store.links_to(conn, tenant, sync_id, PAIR, sorted({d for d, _ in pairs}))
        if k not in leaving and (d, c) in pairs
    ]
    kept = links_store.links_of(conn, tenant, sync_id, LABELED, [k for k, _ in rows if k not in relabeled])
    out: dict[tuple[str, str], set[str]] = {}
    for k, pair in rows:
        out.setdefault(pair, set()).update([kept[k][0]] if k in kept else [])
    return out


def release_all(
    kit: ActivityKit, ctx: SyncContext, connector: Connector, waiting: Sequence[links_store.Deferred],
    landed: dict[str, str], letter: LetterFn,
) -> LinkCounts:  # fmt: skip
    """Link what waited for the records the parent sync ``ctx`` just landed (``landed``: key hash →
    destination id): children (:func:`workflows.associations.release`), junction rows
    (:func:`_release`) and pairs as records (:func:`workflows.pair_records.release`)."""
    pairs = [d for d in waiting if d.field == PAIR_RECORD]
    rows = [d for d in waiting if is_junction(d.child_stream) and d.field != PAIR_RECORD]
    children = [d for d in waiting if not is_junction(d.child_stream) and d.field != PAIR_RECORD]
    counts = release_children(kit, ctx, connector, children, landed, letter) if children else LinkCounts()
    counts = counts.plus(release_pairs(kit, ctx, connector, pairs, letter)) if pairs else counts
    return counts.plus(_release(kit, ctx, connector, rows, letter)) if rows else counts


def _release(
    kit: ActivityKit, ctx: SyncContext, connector: Connector, waiting: Sequence[links_store.Deferred],
    letter: LetterFn,
) -> LinkCounts:  # fmt: skip
    """Resolve again the junction rows waiting for records the parent sync ``ctx`` just landed:
    linked when both ends are synced now, else queued on the other end; a refused row's letter is
    its own sync's, holding its kept source id (:mod:`workflows.released_letters`)."""
    counts = LinkCounts()
    for sync_id, rows in waiting_rows(kit, ctx.tenant.id, waiting, PAIR):
        sync = kit.context(ctx.tenant.id, sync_id)
        junction = Junction.of(kit, sync, connector)
        keys = [r[1] for r in rows]
        roles, ids = Roles(kit, sync).wanted(keys), waiting_ids(kit, sync, PAIR, keys)  # kept sealed
        released = [_Row(*r, record=ids.get(r[1]), role=roles.get(r[1])) for r in rows]
        done, _, _ = junction.settle(released, rehomed(kit, sync, letter))
        counts = counts.plus(done.model_copy(update={"released": done.linked, "linked": 0}))
    return counts
