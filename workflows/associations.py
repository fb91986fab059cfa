"""Relationships in the push (issue 14): a child record linked to its parent at the destination.

**Declared in the mapping.** A mapping entry whose destination is ``@<parent stream>`` is a
relationship: ``{"AccountId": "@companies"}`` on a Salesforce Contact → HubSpot contacts sync
links each contact to the company its ``AccountId`` became. Its source field is read like any
other mapped field, so the instruction must allow it (``allowed_fields.Contact`` lists
``AccountId``) or :func:`governance.policy.check` refuses the plan (rule ``mapping``); it must not be
pseudonymized (a pseudonym resolves nothing) and exactly one sync of the tenant must write the
parent stream through the same destination connection (the *parent sync*) — else the plan fails
with a :class:`~schemas.errors.ConfigError` naming the fix (:func:`check_relationships`).

**Resolved through the id map, parents first.** After a part's upsert, each accepted child's
lookup value is hashed like the parent sync hashed its source keys, and looked up in the parent
sync's id map. Found: the connector links child → parent (HubSpot associations v4 batch create;
a re-parented child's previous link archived first; an unchanged link costs nothing — the links
written are kept in :mod:`store.associations`). A cleared lookup unlinks. Not found (the parent was
not synced yet): the child waits in the sync's **deferral queue** (persisted, attempts counted),
and the parent sync's push that lands the parent links it (:func:`release`) — never dropped.
The queue holds at most :data:`DEFERRAL_LIMIT` children per sync; a child that finds it full is
dead-lettered ``PARENT_NOT_SYNCED`` naming the parent sync to run first. A link the vendor refuses
is dead-lettered with the vendor's code. The push event counts ``linked``, ``unlinked``,
``deferred``, ``released`` and ``link_failed`` (lineage).

**Read at the source** (the other way): ``{"@companies": "AccountId"}`` — the pull reads each
record's parent (:mod:`workflows.reverse_links`), :meth:`Linking.prefill` writes the resolved parent
into the lookup field of the upsert itself, and the same queue, release and re-parenting apply
(the destination's :meth:`~connectors.base.Connector.write_links` sets the lookup field).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from connectors.base import Connector
from schemas.connector import Link, Record
from schemas.errors import ConfigError
from store import associations as links_store
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store.engine import Connection
from workflows.context import ActivityKit, SyncContext
from workflows.released_letters import forget, keep, rehomed, waiting_ids

__all__ = [
    "DEFERRAL_LIMIT",
    "MARK",
    "LinkCounts",
    "Linking",
    "Relationship",
    "any_declared",
    "check_relationships",
    "declared",
    "is_relationship",
    "release",
    "reverse_declared",
    "waiting_children",
]

MARK = links_store.RELATIONSHIP_MARK
is_relationship = links_store.is_relationship
DEFERRAL_LIMIT = 10_000
"""Children per sync that may wait for their parent; beyond it they are dead-lettered."""

# (kind, index in its part, key hash, record shown in the letter, code, message) → a dead letter
LetterFn = Callable[[str, int, str, Record, str, str | None], dead_letter_store.DeadLetter]


def declared(mapping: dict[str, str]) -> list[tuple[str, str]]:
    """(source lookup field, parent stream) of each relationship the mapping declares."""
    return [
        (src, dst[1:])
        for src, dst in mapping.items()
        if is_relationship(dst) and dst != links_store.LABEL_MARK
    ]


def reverse_declared(mapping: dict[str, str]) -> list[tuple[str, str, str]]:
    """(``@<parent source stream>``, parent source stream, destination lookup field) of each
    relationship read at the source (``{"@companies": "AccountId"}``: :mod:`workflows.reverse_links`)."""
    return [(src, src[1:], dst) for src, dst in mapping.items() if is_relationship(src)]


def any_declared(mapping: dict[str, str]) -> bool:
    """Does the mapping declare a relationship, either way (or a junction's label)?"""
    return bool(declared(mapping) or reverse_declared(mapping) or links_store.LABEL_MARK in mapping.values())


@dataclass(frozen=True, slots=True)
class Relationship:
    field: str  # the source lookup field (Contact.AccountId; "@companies" read at the source)
    parent_stream: str  # the destination stream of the parent (companies; Account)
    parent_sync_id: str  # the sync whose id map resolves the parent
    target: str | None = None  # read at the source: the destination lookup field (AccountId)


class LinkCounts(BaseModel):
    """What the relationships of a push did (heartbeated with the push's progress)."""

    model_config = ConfigDict(extra="forbid")

    linked: int = 0
    unlinked: int = 0
    deferred: int = 0
    released: int = 0
    failed: int = 0
    calls: int = 0
    relabeled: int = 0  # junction pairs whose label moved (workflows.junction_labels)

    def plus(self, other: LinkCounts) -> LinkCounts:
        return LinkCounts(**{k: getattr(self, k) + getattr(other, k) for k in LinkCounts.model_fields})

    def lineage(self) -> dict[str, int]:
        """The push event's relationship counts (none when nothing was linked or waiting)."""
        counts = {
            "linked": self.linked, "unlinked": self.unlinked, "deferred": self.deferred,
            "released": self.released, "link_failed": self.failed, "link_calls": self.calls,
        }  # fmt: skip
        counts |= {"relabeled": self.relabeled} if self.relabeled else {}
        return counts if any(counts.values()) else {}


def relationships(conn: Connection, ctx: SyncContext) -> list[Relationship]:
    """The sync's relationships with their parent syncs (:class:`ConfigError` when one has none or
    several)."""
    spec = ctx.spec
    out: list[Relationship] = []
    for field, parent in declared(spec.mapping):
        ids = [
            s
            for s in links_store.syncs_writing(conn, ctx.tenant.id, spec.destination_connection_id, parent)
            if s != spec.id
        ]
        if len(ids) != 1:
            found = f"syncs {ids} write it" if ids else "no sync of the tenant writes it"
            raise ConfigError(
                f"sync {spec.id!r} links {field} to {parent}, but {found} through the same destination "
                f"connection; keep exactly one sync into {parent} (the parent sync) and run it first",
                code="RELATIONSHIP_PARENT",
            )
        out.append(Relationship(field, parent, ids[0]))
    for field, parent, target in reverse_declared(spec.mapping):
        readers = [
            (s, stream)
            for s, stream in links_store.syncs_reading(
                conn, ctx.tenant.id, spec.source_connection_id, parent, spec.destination_connection_id
            )
            if s != spec.id
        ]
        if len(readers) != 1:
            named = (
                f"syncs {[s for s, _ in readers]} read it" if readers else "no sync of the tenant reads it"
            )
            raise ConfigError(
                f"sync {spec.id!r} links {target} to {parent}, but {named} from the same source into the "
                f"same destination connection; keep exactly one sync of {parent} (the parent sync) and "
                "run it first",
                code="RELATIONSHIP_PARENT",
            )
        out.append(Relationship(field, readers[0][1], readers[0][0], target))
    return out


def check_relationships(
    conn: Connection, ctx: SyncContext, connector: Connector, source: Connector | None = None
) -> None:
    """Plan-time: every declared relationship can be resolved, read (``source``, for those read at
    the source) and written (module docstring)."""
    pairs = [*declared(ctx.spec.mapping), *((f, p) for f, p, _ in reverse_declared(ctx.spec.mapping))]
    if not pairs:
        return
    if reverse_declared(ctx.spec.mapping) and source is not None and not source.reads_links:
        raise ConfigError(
            f"the {source.name} connector cannot read relationships; drop the @ sources of the mapping",
            code="LINKS_UNSUPPORTED",
        )
    hidden = set(ctx.instruction.pseudonymize.get(ctx.spec.source_stream, ()))
    for field, _ in pairs:
        if field in hidden:
            raise ConfigError(
                f"sync {ctx.spec.id!r} links by {field}, which the instruction pseudonymizes "
                f"(pseudonymize.{ctx.spec.source_stream}); a pseudonym resolves no parent — leave "
                f"{field} in clear or drop the relationship",
                code="RELATIONSHIP_PSEUDONYMIZED",
            )
    if not connector.links:
        raise ConfigError(
            f"the {connector.name} connector cannot write relationships; drop the @ entries of the mapping",
            code="LINKS_UNSUPPORTED",
        )
    relationships(conn, ctx)


def waiting_children(conn: Connection, ctx: SyncContext, keys: Sequence[str]) -> list[links_store.Deferred]:
    """Children (of any sync) waiting for these just-pushed records of this sync (as parents)."""
    return links_store.waiting_on(conn, ctx.tenant.id, ctx.spec.id, keys) if keys else []


@dataclass(frozen=True, slots=True)
class Linking:
    """Links one part's accepted children to their parents (see the module docstring)."""

    kit: ActivityKit
    ctx: SyncContext
    connector: Connector
    rels: tuple[Relationship, ...]

    @classmethod
    def of(cls, kit: ActivityKit, ctx: SyncContext, connector: Connector) -> Linking | None:
        if not any_declared(ctx.spec.mapping):
            return None
        with kit.deps.engine.connect() as conn:
            return cls(kit, ctx, connector, tuple(relationships(conn, ctx)))

    def prefill(
        self, keys: Sequence[str], records: Sequence[Record], mapped: Sequence[Record]
    ) -> dict[str, dict[str, str | None]]:
        """Relationships read at the source ride on the upsert: each mapped record's lookup field is
        set to its parent's destination id, or ``None`` (cleared, or the parent not synced yet — the
        child then waits, see :meth:`link`). ``records[j]`` (key ``keys[j]``) is the source of
        ``mapped[j]``; returns, per relationship field, child key → the parent written."""
        out: dict[str, dict[str, str | None]] = {}
        tenant = self.ctx.tenant.id
        keyed_hash = self.kit.deps.pseudonymizer.keyed_hash
        for rel in (r for r in self.rels if r.target):
            assert rel.target is not None
            wanted = {
                j: _parent_hash(keyed_hash, tenant, rec.get(rel.field)) for j, rec in enumerate(records)
            }
            with self.kit.deps.engine.connect() as conn:
                parents = id_map_store.lookup_id_map(
                    conn, tenant, rel.parent_sync_id, [h for h in wanted.values() if h]
                )
            written = out.setdefault(rel.field, {})
            for j, h in wanted.items():
                written[keys[j]] = mapped[j][rel.target] = parents.get(h) if h else None
        return out

    def link(
        self,
        accepted: Sequence[tuple[int, str, str, Record]],
        letter: LetterFn,
        prefilled: dict[str, dict[str, str | None]] | None = None,
    ) -> LinkCounts:
        """``accepted``: (index in the part, child key hash, child destination id, source record);
        ``prefilled``: per relationship field, child key hash → the parent its upsert wrote."""
        counts = LinkCounts()
        for rel in self.rels:
            written = (prefilled or {}).get(rel.field)
            if written:
                self._record(rel, accepted, written)
            counts = counts.plus(self._link(rel, accepted, letter))
        return counts

    def _record(
        self,
        rel: Relationship,
        accepted: Sequence[tuple[int, str, str, Record]],
        written: dict[str, str | None],
    ) -> None:
        """Note the links the upsert wrote, so :meth:`_link` writes none of them again."""
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        done = [(k, cid, written[k]) for _, k, cid, _ in accepted if written.get(k)]
        gone = [k for _, k, _, _ in accepted if k in written and not written[k]]
        with self.kit.deps.engine.begin() as conn:
            links_store.set_links(conn, tenant, sync_id, rel.field, [(k, c, p) for k, c, p in done if p],
                                  now=self.kit.deps.clock())  # fmt: skip
            links_store.drop_links(conn, tenant, sync_id, rel.field, gone)

    def _link(
        self, rel: Relationship, accepted: Sequence[tuple[int, str, str, Record]], letter: LetterFn
    ) -> LinkCounts:
        tenant, spec = self.ctx.tenant.id, self.ctx.spec
        keyed_hash = self.kit.deps.pseudonymizer.keyed_hash
        now = self.kit.deps.clock()
        # A link refused or left without a parent is lettered as the record's upsert, holding the
        # staged record, so this sync's retry reads the record again and links it.
        letter = rehomed(self.kit, self.ctx, letter)
        wanted: dict[str, str | None] = {}  # child key → parent key hash (None: unlink)
        rows = [(i, k, cid, rec) for i, k, cid, rec in accepted if rel.field in rec]
        for _, k, _, rec in rows:
            wanted[k] = _parent_hash(keyed_hash, tenant, rec[rel.field])
        with self.kit.deps.engine.connect() as conn:
            current = links_store.links_of(conn, tenant, spec.id, rel.field, list(wanted))
            parents = id_map_store.lookup_id_map(
                conn, tenant, rel.parent_sync_id, [h for h in wanted.values() if h]
            )
            # (this relationship's children pushed again keep their place: not counted against it)
            queued = links_store.count_deferred(conn, tenant, spec.id, excluding=list(wanted))
            room = DEFERRAL_LIMIT - queued
        links: list[Link] = []
        keys: list[str] = []
        deferred: list[links_store.Deferred] = []
        letters: list[dead_letter_store.DeadLetter] = []
        settled: list[str] = []  # off the queue: linked, unlinked, unchanged or dead-lettered
        for i, k, child, rec in rows:
            have = current.get(k)
            previous = have[1] if have and have[0] == child else None
            target = wanted[k]
            parent = parents.get(target) if target else None
            if target is None or parent is not None:
                settled.append(k)
                if parent != previous:
                    links.append(Link(child, parent, previous))
                    keys.append(k)
                continue
            if previous is not None:  # re-parented to a parent not synced yet: unlink the old one now
                links.append(Link(child, None, previous))
                keys.append(k)
            if room > 0:
                room -= 1
                deferred.append(
                    links_store.Deferred(spec.id, rel.field, k, child, spec.destination_stream,
                                         rel.parent_stream, rel.parent_sync_id, target, 1, now)
                )  # fmt: skip
            else:
                settled.append(k)
                why = (
                    f"{rel.field}: its parent is not in {rel.parent_stream} yet and {DEFERRAL_LIMIT} "
                    f"children of this sync already wait; run sync {rel.parent_sync_id!r} first"
                )
                letters.append(letter(f"link {rel.field}", i, k, rec, "PARENT_NOT_SYNCED", why))
        counts = self._write(
            rel, links, keys, letters, accepted_index={k: i for i, k, _, _ in rows}, letter=letter,
            records={k: rec for _, k, _, rec in rows},
        )  # fmt: skip
        with self.kit.deps.engine.begin() as conn:
            links_store.drop_deferred(conn, tenant, spec.id, rel.field, settled)
            links_store.defer(conn, tenant, deferred, now=now)
            waits = {d.child_key_hash for d in deferred}  # a waiting child's source id, for its letter
            keep(self.kit, self.ctx, conn, rel.field, [(k, rec) for _, k, _, rec in rows if k in waits])
            forget(self.ctx, conn, rel.field, settled)
            dead_letter_store.add_dead_letters(conn, letters)
        return counts.plus(LinkCounts(deferred=len(deferred), failed=len(letters) - counts.failed))

    def _write(
        self,
        rel: Relationship,
        links: list[Link],
        keys: list[str],
        letters: list[dead_letter_store.DeadLetter],
        *,
        accepted_index: dict[str, int],
        letter: LetterFn,
        records: dict[str, Record],
    ) -> LinkCounts:
        return write(
            self.kit, self.ctx, self.connector, self.ctx.spec.id, rel.field, self.ctx.spec.destination_stream,
            rel.parent_stream, list(zip(keys, links, strict=True)), letters,
            _refuser(letter, f"link {rel.field}", accepted_index, records),
        )  # fmt: skip


def _parent_hash(keyed_hash: Callable[[str, str], str], tenant: str, value: object) -> str | None:
    """The keyed hash a lookup value resolves through (None: no parent)."""
    return None if value is None or str(value).strip() == "" else keyed_hash(tenant, str(value))


def write(
    kit: ActivityKit,
    ctx: SyncContext,
    connector: Connector,
    sync_id: str,
    field: str,
    stream: str,
    parent_stream: str,
    keyed: list[tuple[str, Link]],
    letters: list[dead_letter_store.DeadLetter],
    refused: Callable[[str, str, str], dead_letter_store.DeadLetter],
) -> LinkCounts:
    """Write ``keyed`` (child key hash, link) links of one relationship and record them; refused
    links go to ``letters`` (added by the caller)."""
    if not keyed:
        return LinkCounts()
    result = connector.write_links(stream, parent_stream, [lk for _, lk in keyed])
    done: list[tuple[str, str, str]] = []
    gone: list[str] = []
    linked = unlinked = 0
    for n, (k, lk) in enumerate(keyed):
        if n in result.failed:
            letters.append(refused(k, *result.failed[n]))
        elif lk.parent_id is None:
            gone.append(k)
            unlinked += 1
        else:
            done.append((k, lk.child_id, lk.parent_id))
            linked += 1
    with kit.deps.engine.begin() as conn:
        links_store.set_links(conn, ctx.tenant.id, sync_id, field, done, now=kit.deps.clock())
        links_store.drop_links(conn, ctx.tenant.id, sync_id, field, gone)
    return LinkCounts(linked=linked, unlinked=unlinked, failed=len(result.failed), calls=result.calls)


def release(
    kit: ActivityKit,
    ctx: SyncContext,
    connector: Connector,
    waiting: Sequence[links_store.Deferred],
    parents: dict[str, str],
    letter: LetterFn,
) -> LinkCounts:
    """Link the children waiting for parents this push just landed (``parents``: key hash →
    destination id); the parent sync's destination connection is the children's (by construction).
    A refused child's letter is its own sync's, holding its kept source id
    (:mod:`workflows.released_letters`), so that sync's retry links it."""
    groups: dict[tuple[str, str, str, str], list[links_store.Deferred]] = defaultdict(list)
    for d in waiting:
        if d.parent_key_hash in parents:
            groups[(d.sync_id, d.field, d.child_stream, d.parent_stream)].append(d)
    counts = LinkCounts()
    tenant = ctx.tenant.id
    for (sync_id, field, stream, parent_stream), items in groups.items():
        with kit.deps.engine.connect() as conn:
            current = links_store.links_of(conn, tenant, sync_id, field, [d.child_key_hash for d in items])
        keyed = []
        position = {d.child_key_hash: n for n, d in enumerate(items)}
        for d in items:
            have = current.get(d.child_key_hash)
            previous = have[1] if have and have[0] == d.child_id else None
            keyed.append((d.child_key_hash, Link(d.child_id, parents[d.parent_key_hash], previous)))
        letters: list[dead_letter_store.DeadLetter] = []
        child = kit.context(tenant, sync_id)  # a refused child's letter is its own sync's
        ids = waiting_ids(kit, child, field, list(position))
        done = write(
            kit, ctx, connector, sync_id, field, stream, parent_stream, keyed, letters,
            _refuser(rehomed(kit, child, letter, ids), f"release {field}", position),
        )  # fmt: skip
        with kit.deps.engine.begin() as conn:
            links_store.drop_deferred(conn, tenant, sync_id, field, [d.child_key_hash for d in items])
            forget(child, conn, field, list(position))
            dead_letter_store.add_dead_letters(conn, letters)
        counts = counts.plus(done.model_copy(update={"released": done.linked, "linked": 0}))
    return counts


def _refuser(
    letter: LetterFn, kind: str, position: dict[str, int], records: dict[str, Record] | None = None
) -> Callable[[str, str, str], dead_letter_store.DeadLetter]:
    """A refused link's dead letter: ``kind`` and the child's position, its staged record (when
    given), the vendor's code and message."""

    def refused(key: str, code: str, message: str) -> dead_letter_store.DeadLetter:
        return letter(kind, position[key], key, (records or {}).get(key, {}), code, message)

    return refused
