"""The Ledger: one tenant's append-only lineage events in the database, with roots and proofs.

Entry ``i`` of a tenant is the canonical bytes of a :class:`~schemas.lineage.LineageEvent` and its
leaf hash SHA-256(0x00 || bytes). :meth:`Ledger.append` hands out contiguous indexes atomically (see
:mod:`store.lineage`), one transaction per batch; :meth:`Ledger.checkpoint` signs (Ed25519) the
origin, size and root. The instance caches the tenant's RFC 9162 Merkle tree and re-checks what it
loads, so a stored entry altered behind its back is an :class:`~schemas.errors.IntegrityError`
naming the index, not a wrong proof.

Before signing, :meth:`Ledger.checkpoint` proves (RFC 9162 consistency proof) that the tree it is
about to sign extends the latest checkpoint the signer's journal and the database hold for the
origin; otherwise someone rewrote or truncated signed history and it raises
:class:`LedgerInconsistent` (code ``ledger_inconsistent``, not retryable) instead of signing it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from governance.lineage._journal import CheckpointJournal
from governance.lineage._report import assemble_report
from governance.lineage._signing import CheckpointSigner, PublicKeyLike, b64, verify_checkpoint
from governance.merkle import MerkleProofError, MerkleTree, leaf_hash, verify_consistency
from schemas.errors import ConfigError, IntegrityError, PolicyError
from schemas.lineage import Checkpoint, ConsistencyProof, InclusionProof, LedgerReport, LineageEvent
from store import lineage as repo
from store.engine import is_sqlite

__all__ = ["Ledger", "LedgerInconsistent"]


class LedgerInconsistent(IntegrityError):
    """The stored ledger does not extend a checkpoint crmhub signed: history was rewritten or cut.

    Not retryable (an :class:`IntegrityError`); code ``ledger_inconsistent``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ledger_inconsistent")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything crmhub writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_SYNC_CHUNK = 32  # ledger entries read per query when the cached tree catches up


class Ledger:
    """One tenant's append-only lineage ledger in the database behind ``engine``.

    Safe to use from many threads and processes at once: indexes are assigned in the database.
    The instance caches the tenant's Merkle tree (leaf hashes, perfect-subtree hashes) so roots and
    proofs cost O(log n); the cache only ever grows from the database and is re-checked on load.
    """

    def __init__(self, engine: Engine, tenant: str, *, origin: str | None = None) -> None:
        if not tenant or "\n" in tenant:
            raise ConfigError("ledger tenant must be a non-empty single line")
        self._engine = engine
        self.tenant = tenant
        self.origin = origin or f"crmhub/{tenant}"
        self._sqlite = is_sqlite(engine)
        self._tree = MerkleTree()

    def append(
        self, events: Sequence[LineageEvent], *, claim: Callable[[Connection], bool] | None = None
    ) -> list[int]:
        """Append ``events`` in order in one transaction; returns their contiguous indexes.

        ``claim`` runs first in that transaction (e.g. marking an outbox row done): when it returns
        False nothing is written and ``[]`` is returned, so an append paired with a claim happens at
        most once however often it is retried. Raises :class:`PolicyError` if an event belongs to
        another tenant (nothing is written).
        """
        if not events:
            return []
        rows: list[tuple[bytes, str, str, bytes]] = []
        for event in events:
            if event.tenant != self.tenant:
                raise PolicyError("lineage event of another tenant offered to this tenant's ledger")
            data = event.canonical_bytes()
            rows.append((leaf_hash(data), event.kind.value, event.run_id, data))
        now = datetime.now(UTC)
        with self._engine.connect() as conn:
            if self._sqlite:
                # Take the write lock up front: no read-then-upgrade deadlock between writers.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            if claim is not None and not claim(conn):
                conn.rollback()
                return []
            first = repo.reserve_indexes(conn, self.tenant, len(rows))
            repo.insert_events(conn, self.tenant, first, rows, now)
            conn.commit()
        return list(range(first, first + len(rows)))

    def size(self) -> int:
        """Number of committed entries."""
        with self._engine.connect() as conn:
            return repo.head_size(conn, self.tenant)

    def _sync(self) -> MerkleTree:
        """Bring the cached tree up to the committed size, re-checking what it loads.

        A fresh cache trusts stored leaf hashes only up to the latest signed checkpoint whose root
        they reproduce; every later entry's leaf is recomputed from its event bytes. A mismatch
        raises :class:`IntegrityError` naming the index.
        """
        tree = self._tree
        with self._engine.connect() as conn:
            size = repo.head_size(conn, self.tenant)
            if tree.size == 0 and size:
                signed = repo.list_checkpoints(conn, self.tenant, max_size=size)
                if signed:
                    last = signed[-1]
                    leaves = repo.read_leaf_hashes(conn, self.tenant, 0, last.size)
                    candidate = MerkleTree.from_leaf_hashes(leaves)
                    if candidate.size != last.size or candidate.root() != last.root_hash:
                        raise IntegrityError(
                            f"stored ledger of {self.origin} no longer matches its checkpoint "
                            f"at size {last.size}"
                        )
                    tree = self._tree = candidate
            # A few events at a time: one event can hold the keyed hashes of 10,000 records, and a
            # long run's events must not all be in memory at once.
            for start in range(tree.size, size, _SYNC_CHUNK):
                for row in repo.read_event_rows(conn, self.tenant, start, min(start + _SYNC_CHUNK, size)):
                    if row.idx != tree.size or leaf_hash(row.event) != row.leaf_hash:
                        raise IntegrityError(
                            f"ledger entry {tree.size} of {self.origin} is missing or altered"
                        )
                    tree.append(row.leaf_hash)
            if tree.size < size:
                raise IntegrityError(f"ledger entry {tree.size} of {self.origin} is missing")
        return tree

    def root(self, size: int | None = None) -> bytes:
        """Merkle root of the first ``size`` entries (default: all committed)."""
        return self._sync().root(size)

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint:
        """Sign and store a checkpoint over every committed entry, after proving the entries extend
        the latest checkpoint signed before (journal and database); :class:`LedgerInconsistent` if
        they do not. The checkpoint is journaled before it is stored in the database."""
        # The journal first: whoever signed it had committed those entries, so the head read next is
        # at least that large unless entries were removed.
        signed = [cp for cp in (signer.journal.latest(self.origin), self._latest_stored(signer)) if cp]
        tree = self._sync()
        for earlier in signed:
            self._prove_extends(tree, earlier)
        checkpoint = signer.sign_checkpoint(self.origin, tree.size, tree.root())
        signer.journal.record(checkpoint)
        with self._engine.begin() as conn:
            repo.insert_checkpoint(
                conn,
                self.tenant,
                repo.CheckpointRow(
                    origin=checkpoint.origin,
                    size=checkpoint.size,
                    root_hash=checkpoint.root,
                    key_id=checkpoint.key_id,
                    signature=base64.b64decode(checkpoint.signature),
                    signed_at=checkpoint.timestamp,
                ),
            )
        return checkpoint

    def check_consistency(self, journal: CheckpointJournal) -> Checkpoint | None:
        """Prove the stored ledger extends the latest checkpoint ``journal`` holds for this origin;
        returns that checkpoint (``None`` if there is none), else :class:`LedgerInconsistent`."""
        latest = journal.latest(self.origin)
        tree = self._sync()
        if latest is not None:
            self._prove_extends(tree, latest)
        return latest

    def _latest_stored(self, signer: CheckpointSigner) -> Checkpoint | None:
        """The database's latest checkpoint of this origin signed by ``signer``'s key (checked)."""
        with self._engine.connect() as conn:
            row = repo.latest_checkpoint(conn, self.tenant)
        if row is None or row.key_id != signer.key_id:
            return None  # none yet, or one by an earlier key: the journal speaks for this key
        stored = _checkpoint_of(row)
        try:
            verify_checkpoint(stored, signer.public_key)
        except IntegrityError:
            raise LedgerInconsistent(
                f"the stored checkpoint of {self.origin} at size {row.size} carries an invalid signature: "
                "the database was tampered with; refusing to sign"
            ) from None
        return stored

    def _prove_extends(self, tree: MerkleTree, earlier: Checkpoint) -> None:
        """RFC 9162: the tree's first ``earlier.size`` entries must have ``earlier``'s root."""
        if earlier.size > tree.size:
            raise LedgerInconsistent(
                f"{self.origin} holds {tree.size} entries, but crmhub signed a checkpoint at size "
                f"{earlier.size} ({earlier.timestamp:%Y-%m-%dT%H:%M:%SZ}): entries were removed; "
                "refusing to sign"
            )
        if earlier.size == 0:
            return
        proof = tree.consistency_proof(earlier.size, tree.size)
        try:
            verify_consistency(earlier.size, tree.size, proof, earlier.root, tree.root())
        except MerkleProofError:
            raise LedgerInconsistent(
                f"the stored ledger of {self.origin} is not consistent with the checkpoint crmhub signed "
                f"at size {earlier.size} ({earlier.timestamp:%Y-%m-%dT%H:%M:%SZ}): signed history was "
                "rewritten; refusing to sign"
            ) from None

    def checkpoints(self, *, max_size: int | None = None) -> list[Checkpoint]:
        """Stored checkpoints, oldest first (optionally only those covering at most ``max_size``)."""
        with self._engine.connect() as conn:
            rows = repo.list_checkpoints(conn, self.tenant, max_size=max_size)
        return [_checkpoint_of(r) for r in rows]

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``size`` entries (default: all)."""
        tree, size, hashes = self._proof(size, lambda t, n: t.inclusion_proof(index, n))
        return InclusionProof(index=index, size=size, leaf_hash=b64(tree.leaf(index)), hashes=hashes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``size1`` entries is a prefix of the tree of ``size2``."""
        _, size2, hashes = self._proof(size2, lambda t, n: t.consistency_proof(size1, n))
        return ConsistencyProof(size1=size1, size2=size2, hashes=hashes)

    def _proof(
        self, size: int | None, prove: Callable[[MerkleTree, int], Sequence[bytes]]
    ) -> tuple[MerkleTree, int, tuple[str, ...]]:
        """The synced tree, ``size`` (default: every committed entry) and ``prove(tree, size)`` in
        base64; an index or size the tree does not have is a :class:`ConfigError`."""
        tree = self._sync()
        size = tree.size if size is None else size
        try:
            hashes = prove(tree, size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return tree, size, tuple(b64(h) for h in hashes)

    def read_events(
        self, start: int = 0, stop: int | None = None, *, run_id: str | None = None
    ) -> list[LineageEvent]:
        """Decoded events ``start..stop-1`` (optionally of one run), in index order."""
        with self._engine.connect() as conn:
            stop = repo.head_size(conn, self.tenant) if stop is None else stop
            rows = repo.read_event_rows(conn, self.tenant, start, stop, run_id=run_id)
        return [LineageEvent.from_canonical(r.event) for r in rows]

    def export_report(
        self,
        checkpoint: Checkpoint | None = None,
        *,
        public_key: PublicKeyLike | None = None,
        journal: CheckpointJournal | None = None,
    ) -> LedgerReport:
        """Report (format 2) of every entry covered by ``checkpoint`` (default: the latest one stored
        or journaled), with every checkpoint up to it from the database and ``journal`` and the
        consistency proofs between them.

        Raises :class:`ConfigError` when the ledger has no checkpoint yet (sign one first).
        """
        if checkpoint is None:
            latest = [cp for cp in (*self.checkpoints()[-1:], journal and journal.latest(self.origin)) if cp]
            if not latest:
                raise ConfigError(f"ledger {self.origin} has no checkpoint; call checkpoint() first")
            checkpoint = max(latest, key=lambda cp: cp.size)
        history = {cp.signature: cp for cp in self.checkpoints(max_size=checkpoint.size)}
        if journal is not None:
            history.update((cp.signature, cp) for cp in journal.chain(self.origin, max_size=checkpoint.size))
        history.setdefault(checkpoint.signature, checkpoint)
        with self._engine.connect() as conn:
            rows = repo.read_event_rows(conn, self.tenant, 0, checkpoint.size)
        return assemble_report(
            self.tenant,
            self.origin,
            ((r.idx, r.leaf_hash, r.event) for r in rows),
            list(history.values()),
            public_key,
        )


def _checkpoint_of(row: repo.CheckpointRow) -> Checkpoint:
    return Checkpoint(
        origin=row.origin,
        size=row.size,
        root_hash=b64(row.root_hash),
        timestamp=_utc(row.signed_at),
        key_id=row.key_id,
        signature=b64(row.signature),
    )
