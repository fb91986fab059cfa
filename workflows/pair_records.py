"""Association pairs as records (issue 14, HubSpot → Salesforce): HubSpot deal↔contact associations
→ Salesforce ``OpportunityContactRole`` rows — the reverse of :mod:`workflows.junctions`.

**Declared** by a sync whose *source* stream is an association stream and whose mapping names both
ends as relationships read at the source::

    source_stream: deals/contacts
    destination_stream: OpportunityContactRole
    mapping: {"@deals": OpportunityId, "@contacts": ContactId}

Both ``@deals`` and ``@contacts`` are fields of the instruction (``allowed_fields["deals/contacts"]``,
else the plan is refused, rule ``mapping``; never pseudonymized) and each end needs its parent sync
reading it from the same portal into the same org (deals → Opportunity, contacts → Contact:
:func:`workflows.associations.relationships`); nothing else may be mapped (:func:`check_pairs`).

**Pushed** (:class:`PairRecords`, in place of the upsert): each pair's ends are resolved through the
parent syncs' id maps; a pair not at the destination yet is created — Salesforce Collections create,
200 a call — and its role's Id kept in the sync's id map (pair key hash → ``00K…``: no external id
field on OpportunityContactRole is needed); a pair already there costs nothing (a pair's ends never
change: a re-association is a new pair and a vanished one). ``Role`` stays empty and ``IsPrimary``
false: HubSpot's unlabeled deal→contact association carries no role (custom labels are not read). A
pair with an end not synced yet waits in the deferral queue on that end (:data:`RECORD`); the parent
sync's push that lands it resolves the pair again (:func:`release`) and creates it or queues it on
the other end. A vanished pair (:mod:`workflows.pair_source`) deletes its role —
``DELETE /composite/sobjects?ids=``, 200 a call — in every write mode, as a cleared lookup unlinks (the
role *is* the association) and ends the pair's letters. A refused pair's letter (kind
:data:`UPSERT`: a refused create, a full queue) is retried by :mod:`workflows.retry`. Counted in the
``push`` event like records (``created``, ``deleted``) and links (``deferred``, ``released``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from connectors.base import Connector
from schemas.connector import OutcomeStatus, Record, WriteMode
from schemas.errors import ConfigError
from store import associations as links_store
from store import dead_letters as dead_letter_store
from store import id_map as id_map_store
from store.engine import Connection
from workflows.associations import DEFERRAL_LIMIT, LinkCounts, Relationship, relationships
from workflows.context import ActivityKit, SyncContext
from workflows.released_letters import UPSERT, rehomed

__all__ = ["RECORD", "UPSERT", "WANTED", "PairRecords", "TwoEnds", "check_pairs", "release", "waiting_rows"]

RECORD = "@pair-record"
"""Deferral queue field of a pair waiting for an end."""
WANTED = "@wanted"
"""``association_links`` field of the keyed hashes of the ends a pair points at."""
LetterFn = Callable[[str, int, str, Record, str, str | None], dead_letter_store.DeadLetter]


def _ends(conn: Connection, ctx: SyncContext) -> tuple[Relationship, Relationship]:
    owner, _, other = ctx.spec.source_stream.partition(links_store.JUNCTION_SEPARATOR)
    rels = [r for r in relationships(conn, ctx) if r.target]
    by_field = {r.field: r for r in rels}
    if f"@{owner}" not in by_field or f"@{other}" not in by_field or len(ctx.spec.mapping) != 2:
        raise ConfigError(
            f"a sync from {ctx.spec.source_stream} creates a record per pair: map @{owner} and @{other} "
            f"to its two lookups (e.g. '@{owner}': OpportunityId, '@{other}': ContactId) and nothing else",
            code="JUNCTION_ENDS",
        )
    return by_field[f"@{owner}"], by_field[f"@{other}"]


def check_pairs(conn: Connection, ctx: SyncContext) -> None:
    """Plan-time: a sync from an association stream maps exactly its two ends."""
    if links_store.is_junction(ctx.spec.source_stream):
        _ends(conn, ctx)


@dataclass(frozen=True, slots=True)
class _Pair:
    index: int
    key: str  # keyed hash of the pair id
    owner: str  # keyed hash of the deal id
    other: str  # ... of the contact id
    record: Record | None = None  # as staged (in its letter, so a retry can read the pair again)


class PushLike(Protocol):
    """The push progress fields a pair part adds to (:class:`workflows.push.PushProgress`)."""

    created: int
    failed: int
    calls: int
    deletes_propagated: int
    deletes_failed: int
    resolved: int
    resolved_runs: list[str]
    links: LinkCounts


@dataclass(frozen=True, slots=True)
class PairResult:
    """What one pair part did: ``links`` (deferred, refused creates, create calls), roles
    ``created`` and ``deleted`` (``delete_failed`` refused, in ``delete_calls``), the keys accepted
    (at the destination or queued) and the (letter, run) of the refusals they end."""

    links: LinkCounts
    created: int
    deleted: int
    delete_failed: int
    delete_calls: int
    accepted: list[str]
    resolved: list[tuple[str, str]]

    def progress(self, p: PushLike) -> dict[str, object]:
        """``p``'s fields with this part added (a ``model_copy`` update)."""
        return {
            "created": p.created + self.created,
            "failed": p.failed + self.links.failed,
            "calls": p.calls + self.links.calls + self.delete_calls,
            "deletes_propagated": p.deletes_propagated + self.deleted,
            "deletes_failed": p.deletes_failed + self.delete_failed,
            "resolved": p.resolved + len(self.resolved),
            "resolved_runs": sorted({*p.resolved_runs, *(run for _, run in self.resolved)}),
            "links": p.links.plus(self.links),
        }


@dataclass(frozen=True, slots=True)
class TwoEnds:
    """The push of a sync whose rows point at two parents' records (pairs here, junction rows in
    :mod:`workflows.junctions`): its connector and the two ends' relationships."""

    kit: ActivityKit
    ctx: SyncContext
    connector: Connector
    owner: Relationship
    other: Relationship

    @staticmethod
    def ends(conn: Connection, ctx: SyncContext) -> tuple[Relationship, Relationship]:
        """The (owner, other) ends of the sync ``ctx``."""
        raise NotImplementedError

    @classmethod
    def of(cls, kit: ActivityKit, ctx: SyncContext, connector: Connector) -> Self:
        with kit.deps.engine.connect() as conn:
            owner, other = cls.ends(conn, ctx)
        return cls(kit, ctx, connector, owner, other)

    def wait(
        self, queue: str, row: tuple[int, str, str, str], owner_synced: bool, record: Record,
        letter: LetterFn, *, room: int, deferred: list[links_store.Deferred],
        letters: list[dead_letter_store.DeadLetter],
    ) -> int:  # fmt: skip
        """A row (position, key, owner end hash, other end hash) with an end not synced yet: queued
        on that end under ``queue`` (appended to ``deferred``), or dead-lettered ``PARENT_NOT_SYNCED``
        (to ``letters``) when the queue has no ``room``; returns the room left."""
        index, key, owner, other = row
        end, missing = (self.other, other) if owner_synced else (self.owner, owner)
        if room <= 0:
            why = (
                f"{end.target or end.field}: its {end.parent_stream} record is not synced yet and "
                f"{DEFERRAL_LIMIT} rows of this sync already wait; run sync {end.parent_sync_id!r} first"
            )
            letters.append(letter(UPSERT, index, key, record, "PARENT_NOT_SYNCED", why))
            return room
        waiting = links_store.Deferred(
            self.ctx.spec.id, queue, key, "", self.ctx.spec.destination_stream, end.parent_stream,
            end.parent_sync_id, missing, 1, self.kit.deps.clock(),
        )  # fmt: skip
        deferred.append(waiting)
        return room - 1


@dataclass(frozen=True, slots=True)
class PairRecords(TwoEnds):
    """Pushes one pair sync's rows as destination records (see the module docstring)."""

    @staticmethod
    def ends(conn: Connection, ctx: SyncContext) -> tuple[Relationship, Relationship]:
        return _ends(conn, ctx)

    def push(
        self, keys: Sequence[str], records: Sequence[Record], deleted: Sequence[str], letter: LetterFn
    ) -> PairResult:
        """Create one part's new pairs and delete its vanished ones."""
        tenant, keyed_hash = self.ctx.tenant.id, self.kit.deps.pseudonymizer.keyed_hash
        rows = [
            _Pair(i, k, keyed_hash(tenant, str(r.get(self.owner.field))),
                  keyed_hash(tenant, str(r.get(self.other.field))), r)
            for i, (k, r) in enumerate(zip(keys, records, strict=True))
            if r.get(self.owner.field) and r.get(self.other.field)
        ]  # fmt: skip
        rows = list({r.key: r for r in reversed(rows)}.values())  # a pair swept and read again: once
        deleted = list(dict.fromkeys(deleted))
        with self.kit.deps.engine.begin() as conn:
            wanted = [(r.key, r.owner, r.other) for r in rows]
            links_store.set_links(conn, tenant, self.ctx.spec.id, WANTED, wanted, now=self.kit.deps.clock())
        counts, created, ok, waiting = self.settle(rows, letter)
        with self.kit.deps.engine.begin() as conn:  # a vanished pair's refusals end with it
            ended = dead_letter_store.resolve_dead_letters(conn, tenant, self.ctx.spec.id, deleted)
        gone, refused, calls = self.delete(deleted, letter)
        with self.kit.deps.engine.begin() as conn:  # accepted at last: the earlier refusals end
            resolved = dead_letter_store.resolve_dead_letters(conn, tenant, self.ctx.spec.id, ok + waiting)
        return PairResult(counts, created, gone, refused, calls, ok + waiting, ended + resolved)

    def settle(self, rows: Sequence[_Pair], letter: LetterFn) -> tuple[LinkCounts, int, list[str], list[str]]:
        """Resolve ``rows``' ends, create the pairs not at the destination, queue those with an end
        not synced yet; returns the counts, the roles created, the keys at the destination and the
        keys queued."""
        tenant, sync_id, now = self.ctx.tenant.id, self.ctx.spec.id, self.kit.deps.clock()
        with self.kit.deps.engine.connect() as conn:
            keys = [r.key for r in rows]
            have = id_map_store.lookup_id_map(conn, tenant, sync_id, keys)
            owners = id_map_store.lookup_id_map(
                conn, tenant, self.owner.parent_sync_id, [r.owner for r in rows]
            )
            others = id_map_store.lookup_id_map(
                conn, tenant, self.other.parent_sync_id, [r.other for r in rows]
            )
            room = DEFERRAL_LIMIT - links_store.count_deferred(conn, tenant, sync_id, excluding=keys)
        ok: list[str] = []
        create: list[tuple[_Pair, Record]] = []
        deferred: list[links_store.Deferred] = []
        letters: list[dead_letter_store.DeadLetter] = []
        for r in rows:
            if r.key in have:
                ok.append(r.key)
                continue
            deal, contact = owners.get(r.owner), others.get(r.other)
            if deal and contact:
                assert self.owner.target is not None and self.other.target is not None
                create.append((r, {self.owner.target: deal, self.other.target: contact}))
                continue
            row = (r.index, r.key, r.owner, r.other)
            room = self.wait(
                RECORD,
                row,
                deal is not None,
                r.record or {},
                letter,
                room=room,
                deferred=deferred,
                letters=letters,
            )
        calls, mapped = 0, []
        if create:
            stream, new = self.ctx.spec.destination_stream, [rec for _, rec in create]
            answer = self.connector.write_batch(stream, new, WriteMode.CREATE, external_id="Id")
            calls = answer.calls
            for (r, _), outcome in zip(create, answer.outcomes, strict=True):
                if outcome.ok and outcome.id and outcome.status is OutcomeStatus.CREATED:
                    mapped.append((r.key, outcome.id))
                else:
                    code = outcome.error_code or "VENDOR_REFUSED"
                    letters.append(
                        letter(UPSERT, r.index, r.key, r.record or {}, code, outcome.error_message)
                    )
        with self.kit.deps.engine.begin() as conn:
            id_map_store.upsert_id_map(conn, tenant, sync_id, mapped, now=now)
            links_store.drop_deferred(conn, tenant, sync_id, RECORD, [r.key for r in rows])
            links_store.defer(conn, tenant, deferred, now=now)
            dead_letter_store.add_dead_letters(conn, letters)
        counts = LinkCounts(deferred=len(deferred), failed=len(letters), calls=calls)
        return counts, len(mapped), ok + [k for k, _ in mapped], [d.child_key_hash for d in deferred]

    def delete(self, deleted: Sequence[str], letter: LetterFn) -> tuple[int, int, int]:
        """Delete the roles of vanished pairs; returns (deleted, refused, calls)."""
        if not deleted:
            return 0, 0, 0
        tenant, sync_id = self.ctx.tenant.id, self.ctx.spec.id
        with self.kit.deps.engine.begin() as conn:
            links_store.drop_links(conn, tenant, sync_id, WANTED, list(deleted))
            links_store.drop_deferred(conn, tenant, sync_id, RECORD, list(deleted))
            found = id_map_store.lookup_id_map(conn, tenant, sync_id, list(deleted))
        targets = [(i, k, found[k]) for i, k in enumerate(deleted) if k in found]
        if not targets:
            return 0, 0, 0
        answer = self.connector.write_batch(
            self.ctx.spec.destination_stream, [{"Id": d} for _, _, d in targets], WriteMode.DELETE,
            external_id="Id",
        )  # fmt: skip
        gone: list[str] = []
        letters: list[dead_letter_store.DeadLetter] = []
        for (i, k, d), outcome in zip(targets, answer.outcomes, strict=True):
            if outcome.ok:
                gone.append(k)
            else:
                code = outcome.error_code or "VENDOR_REFUSED"
                letters.append(letter("delete", i, k, {"destination_id": d}, code, outcome.error_message))
        with self.kit.deps.engine.begin() as conn:
            id_map_store.delete_id_map(conn, tenant, sync_id, gone)
            dead_letter_store.add_dead_letters(conn, letters)
        return len(gone), len(letters), answer.calls


def waiting_rows(
    kit: ActivityKit, tenant: str, waiting: Sequence[links_store.Deferred], field: str
) -> Iterator[tuple[str, list[tuple[int, str, str, str]]]]:
    """Per sync, (position, key, owner end hash, other end hash) of the rows waiting in the queue
    ``field`` (pairs here, junction rows in :mod:`workflows.junctions`); rows gone meanwhile (their
    ends under :data:`WANTED` dropped) are dropped from the queue."""
    by_sync: dict[str, list[str]] = defaultdict(list)
    for d in waiting:
        by_sync[d.sync_id].append(d.child_key_hash)
    for sync_id, keys in by_sync.items():
        with kit.deps.engine.connect() as conn:
            wanted = links_store.links_of(conn, tenant, sync_id, WANTED, keys)
        if len(wanted) < len(keys):
            with kit.deps.engine.begin() as conn:
                gone = [k for k in keys if k not in wanted]
                links_store.drop_deferred(conn, tenant, sync_id, field, gone)
        yield sync_id, [(n, k, *wanted[k]) for n, k in enumerate(keys) if k in wanted]


def release(
    kit: ActivityKit, ctx: SyncContext, connector: Connector, waiting: Sequence[links_store.Deferred],
    letter: LetterFn,
) -> LinkCounts:  # fmt: skip
    """Resolve again the pairs waiting for records the parent sync ``ctx`` just landed: created when
    both ends are synced now, else queued on the other end."""
    counts = LinkCounts()
    for sync_id, rows in waiting_rows(kit, ctx.tenant.id, waiting, RECORD):
        pairs = PairRecords.of(kit, kit.context(ctx.tenant.id, sync_id), connector)
        done, created, _, _ = pairs.settle([_Pair(*r) for r in rows], rehomed(kit, pairs.ctx, letter))
        counts = counts.plus(done.model_copy(update={"released": created}))
    return counts
