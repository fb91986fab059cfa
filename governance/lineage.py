"""The tamper-evident lineage ledger: append events, sign checkpoints, prove, export, verify.

One tree per tenant
-------------------
Each tenant has its own RFC 9162 Merkle tree (origin ``crmhub/<tenant>``). An auditor of tenant A
receives and verifies only A's events; B's events never appear in A's report or proofs, and B's
volume does not leak through A's tree size.

What is stored
--------------
Entry ``i`` of a tenant is the canonical bytes of a :class:`~schemas.lineage.LineageEvent`
(:meth:`~schemas.lineage.LineageEvent.canonical_bytes`) and its leaf hash SHA-256(0x00 || bytes).
:meth:`Ledger.append` hands out contiguous indexes atomically (see :mod:`store.lineage`), one
transaction per batch. :meth:`Ledger.checkpoint` signs (Ed25519) the origin, size and root.

Report format and how damage is localized
-----------------------------------------
:meth:`Ledger.export_report` produces a :class:`~schemas.lineage.LedgerReport` (JSON via
:func:`report_to_json`): ``{"format": "crmhub.lineage.report/1", "tenant", "origin",
"public_key", "checkpoints": [signed checkpoints, oldest first; the last covers every entry],
"entries": [{"index", "leaf_hash" (base64, as stored at append time), "event" (canonical JSON
text)}]}``.

:func:`verify` needs only the report (or the bare list of event bytes), the checkpoint the auditor
trusts and the public key — no database. It checks the signature, recomputes every leaf from the
event text and the root, and on a mismatch names the first bad index:

1. The listed leaf hashes, put in index order, are *authenticated* when they reproduce the signed
   root (collision resistance of SHA-256). Then the first position ``p`` whose entry does not carry
   index ``p`` (a deletion, insertion or move) or whose event does not hash to the authenticated
   leaf ``p`` (an edit) is exactly the first bad index.
2. If the listed hashes do not authenticate (an entry was removed together with its hash, or the
   hash column was rewritten), the first position whose index number is out of sequence is named,
   and the signed checkpoint history bounds the earliest damage: ``bad_window = [s_good, s_bad)``
   between the last checkpoint whose root the entries still reproduce and the first they do not.
   Frequent checkpoints (e.g. one per run) make that window small.

A bare list of event bytes carries no index numbers or leaf hashes, so it can only be accepted or
rejected as a whole.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Engine

from governance.merkle import MerkleTree, leaf_hash, root_from_leaf_hashes
from schemas.errors import ConfigError, IntegrityError, PolicyError
from schemas.lineage import (
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    LedgerReport,
    LineageEvent,
    ReportEntry,
    VerificationResult,
)
from store import lineage as repo
from store.engine import is_sqlite

__all__ = [
    "CheckpointSigner",
    "Ledger",
    "PublicKeyLike",
    "build_report",
    "key_id_for",
    "load_public_key",
    "report_from_json",
    "report_to_json",
    "verify",
    "verify_checkpoint",
]

PublicKeyLike = Ed25519PublicKey | bytes | str
"""An Ed25519 public key: the object, 32 raw bytes, base64 of the raw bytes, or PEM text/bytes."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything crmhub writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """Short stable key id: the first 8 bytes (hex) of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """Accept a key object, raw 32 bytes, base64 raw, or PEM; raise :class:`ConfigError` otherwise."""
    if isinstance(value, Ed25519PublicKey):
        return value
    data = value.encode("ascii") if isinstance(value, str) else value
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError("public key is not an Ed25519 key")
            return key
        raw = data if len(data) == 32 else base64.b64decode(data, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "public key must be Ed25519: PEM, raw 32 bytes, or base64 of the raw bytes"
        ) from exc


class CheckpointSigner:
    """Holds the Ed25519 private key that signs checkpoints; the public key goes to auditors."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id: str = key_id_for(self.public_key)

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh in-memory key (tests, throwaway ledgers)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path | str) -> CheckpointSigner:
        """Load the PKCS#8 PEM key at ``path``, or create it (mode 0600) if it does not exist.

        Creation is atomic (write a temporary file, then hard-link it into place), so workers
        starting together end up with one key. A key file readable by group or others is refused
        with :class:`ConfigError`.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-key-")
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, pem)
                os.fsync(fd)
                os.close(fd)
                # FileExistsError: another process created it first; use theirs.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"checkpoint key file has mode {mode:o}; it must be private: chmod 600 {path.name}"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("checkpoint key file does not hold an Ed25519 private key")
        return cls(key)

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def public_key_b64(self) -> str:
        """Base64 of the 32 raw public key bytes."""
        return _b64(self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def sign_checkpoint(
        self, origin: str, size: int, root: bytes, timestamp: datetime | None = None
    ) -> Checkpoint:
        """Sign the statement "``origin`` had ``size`` entries with root ``root``"."""
        timestamp = datetime.now(UTC) if timestamp is None else timestamp
        signature = self._key.sign(Checkpoint.body(origin, size, root, timestamp))
        return Checkpoint(
            origin=origin,
            size=size,
            root_hash=_b64(root),
            timestamp=timestamp,
            key_id=self.key_id,
            signature=_b64(signature),
        )


def verify_checkpoint(checkpoint: Checkpoint, public_key: PublicKeyLike) -> None:
    """Raise :class:`IntegrityError` unless ``checkpoint`` is signed by ``public_key``."""
    key = load_public_key(public_key)
    if checkpoint.key_id != key_id_for(key):
        raise IntegrityError(f"checkpoint was signed by key {checkpoint.key_id}, not by {key_id_for(key)}")
    try:
        key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_body())
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError(f"checkpoint signature of {checkpoint.origin} is invalid") from exc


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

    def append(self, events: Sequence[LineageEvent]) -> list[int]:
        """Append ``events`` in order in one transaction; returns their contiguous indexes.

        Raises :class:`PolicyError` if an event belongs to another tenant (nothing is written).
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
        """Sign and store a checkpoint over every committed entry."""
        tree = self._sync()
        checkpoint = signer.sign_checkpoint(self.origin, tree.size, tree.root())
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

    def checkpoints(self, *, max_size: int | None = None) -> list[Checkpoint]:
        """Stored checkpoints, oldest first (optionally only those covering at most ``max_size``)."""
        with self._engine.connect() as conn:
            rows = repo.list_checkpoints(conn, self.tenant, max_size=max_size)
        return [
            Checkpoint(
                origin=r.origin,
                size=r.size,
                root_hash=_b64(r.root_hash),
                timestamp=_utc(r.signed_at),
                key_id=r.key_id,
                signature=_b64(r.signature),
            )
            for r in rows
        ]

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``size`` entries (default: all)."""
        tree = self._sync()
        size = tree.size if size is None else size
        try:
            hashes = tree.inclusion_proof(index, size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return InclusionProof(
            index=index,
            size=size,
            leaf_hash=_b64(tree.leaf(index)),
            hashes=tuple(_b64(h) for h in hashes),
        )

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``size1`` entries is a prefix of the tree of ``size2``."""
        tree = self._sync()
        size2 = tree.size if size2 is None else size2
        try:
            hashes = tree.consistency_proof(size1, size2)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return ConsistencyProof(size1=size1, size2=size2, hashes=tuple(_b64(h) for h in hashes))

    def read_events(
        self, start: int = 0, stop: int | None = None, *, run_id: str | None = None
    ) -> list[LineageEvent]:
        """Decoded events ``start..stop-1`` (optionally of one run), in index order."""
        with self._engine.connect() as conn:
            stop = repo.head_size(conn, self.tenant) if stop is None else stop
            rows = repo.read_event_rows(conn, self.tenant, start, stop, run_id=run_id)
        return [LineageEvent.from_canonical(r.event) for r in rows]

    def export_report(
        self, checkpoint: Checkpoint | None = None, *, public_key: PublicKeyLike | None = None
    ) -> LedgerReport:
        """Report of every entry covered by ``checkpoint`` (default: the latest stored one).

        Raises :class:`ConfigError` when the ledger has no checkpoint yet (sign one first).
        """
        if checkpoint is None:
            stored = self.checkpoints()
            if not stored:
                raise ConfigError(f"ledger {self.origin} has no checkpoint; call checkpoint() first")
            checkpoint = stored[-1]
        history = self.checkpoints(max_size=checkpoint.size)
        if checkpoint not in history:
            history.append(checkpoint)
        with self._engine.connect() as conn:
            rows = repo.read_event_rows(conn, self.tenant, 0, checkpoint.size)
        entries = tuple(
            ReportEntry(index=r.idx, leaf_hash=_b64(r.leaf_hash), event=r.event.decode("utf-8")) for r in rows
        )
        return LedgerReport(
            tenant=self.tenant,
            origin=self.origin,
            public_key=None if public_key is None else _public_b64(public_key),
            checkpoints=tuple(history),
            entries=entries,
        )


def _public_b64(public_key: PublicKeyLike) -> str:
    key = load_public_key(public_key)
    return _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def build_report(
    tenant: str,
    events: Sequence[bytes],
    checkpoints: Sequence[Checkpoint],
    *,
    origin: str | None = None,
    public_key: PublicKeyLike | None = None,
) -> LedgerReport:
    """A report over canonical event bytes held in memory (entries numbered from 0)."""
    entries = tuple(
        ReportEntry(index=i, leaf_hash=_b64(leaf_hash(data)), event=data.decode("utf-8"))
        for i, data in enumerate(events)
    )
    return LedgerReport(
        tenant=tenant,
        origin=origin or f"crmhub/{tenant}",
        public_key=None if public_key is None else _public_b64(public_key),
        checkpoints=tuple(checkpoints),
        entries=entries,
    )


def report_to_json(report: LedgerReport) -> bytes:
    """The report as UTF-8 JSON (what an auditor downloads)."""
    return report.model_dump_json().encode("utf-8")


def report_from_json(data: bytes | str) -> LedgerReport:
    """Parse a report; raises :class:`IntegrityError` if it is not a well-formed report."""
    try:
        return LedgerReport.model_validate_json(data)
    except ValueError as exc:
        raise IntegrityError("not a well-formed crmhub lineage report") from exc


def _decode_hash(value: str) -> bytes | None:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def verify(
    source: LedgerReport | bytes | str | Sequence[bytes],
    checkpoint: Checkpoint,
    public_key: PublicKeyLike,
) -> VerificationResult:
    """Verify a ledger export offline against a trusted checkpoint and the ledger's public key.

    ``source`` is a :class:`LedgerReport`, its JSON, or the bare list of canonical event bytes.
    Entries beyond ``checkpoint.size`` are not judged (counted in ``unverified_tail``). Never
    raises for bad evidence: the result says what failed and, when localizable, where
    (see the module docstring for the localization rules).
    """
    size = checkpoint.size
    try:
        verify_checkpoint(checkpoint, public_key)
    except IntegrityError as exc:
        return VerificationResult(ok=False, reason=str(exc), size=size)
    key = load_public_key(public_key)

    if isinstance(source, bytes | str):
        try:
            source = report_from_json(source)
        except IntegrityError as exc:
            return VerificationResult(ok=False, reason=str(exc), size=size, signature_ok=True)
    report = source if isinstance(source, LedgerReport) else None
    entries: Sequence[ReportEntry] = ()
    if report is not None:
        if report.origin != checkpoint.origin:
            return VerificationResult(
                ok=False,
                reason=f"report is for {report.origin}, checkpoint for {checkpoint.origin}",
                size=size,
                signature_ok=True,
            )
        entries = report.entries
        total = len(entries)
        datas = [e.event.encode("utf-8") for e in entries[:size]]
    else:
        assert not isinstance(source, LedgerReport)  # narrowed above; helps the type checker
        total = len(source)
        datas = list(source[:size])

    tail = max(total - size, 0)
    leaves = [leaf_hash(d) for d in datas]
    in_sequence = report is None or all(e.index == i for i, e in enumerate(entries[:size]))
    if len(leaves) == size and in_sequence and root_from_leaf_hashes(leaves) == checkpoint.root:
        return _verify_history(report, checkpoint, key, leaves, tail)

    base = {"size": size, "signature_ok": True, "unverified_tail": tail}
    if report is None:
        reason = (
            f"{len(leaves)} events given, checkpoint covers {size}"
            if len(leaves) != size
            else "events do not reproduce the signed root"
        )
        return VerificationResult(ok=False, reason=reason, bad_window=(0, size), **base)

    # 1. Authenticate the listed leaf hashes (in index order) against the signed root.
    claimed: dict[int, bytes] = {}
    for entry in entries:
        if entry.index < size and entry.index not in claimed:
            decoded = _decode_hash(entry.leaf_hash)
            if decoded is not None:
                claimed[entry.index] = decoded
    if len(claimed) == size:
        ordered = [claimed[i] for i in range(size)]
        if root_from_leaf_hashes(ordered) == checkpoint.root:
            for pos in range(size):
                if pos >= len(entries) or entries[pos].index != pos:
                    return VerificationResult(
                        ok=False,
                        reason=f"entry {pos} is missing or out of order",
                        first_bad_index=pos,
                        **base,
                    )
                if leaves[pos] != ordered[pos]:
                    return VerificationResult(
                        ok=False,
                        reason=f"entry {pos} was altered: its event does not hash to the signed leaf",
                        first_bad_index=pos,
                        **base,
                    )

    # 2. Not authenticated: name the first out-of-sequence entry, bound the damage by checkpoints.
    first_bad: int | None = None
    for pos in range(size):
        if pos >= len(entries) or entries[pos].index != pos:
            first_bad = pos
            break
    window = _bad_window(report, key, leaves, size)
    if first_bad is not None:
        reason = f"entry {first_bad} is missing or out of order"
    else:
        reason = (
            "events do not reproduce the signed root and the listed leaf hashes were altered too; "
            f"the first damage lies in entries {window[0]}..{window[1] - 1}"
        )
    return VerificationResult(ok=False, reason=reason, first_bad_index=first_bad, bad_window=window, **base)


def _valid_history(report: LedgerReport, key: Ed25519PublicKey, max_size: int) -> list[Checkpoint]:
    key_id = key_id_for(key)
    valid: list[Checkpoint] = []
    for cp in report.checkpoints:
        if cp.origin != report.origin or cp.key_id != key_id or cp.size > max_size:
            continue
        try:
            verify_checkpoint(cp, key)
        except IntegrityError:
            continue
        valid.append(cp)
    return sorted(valid, key=lambda cp: cp.size)


def _bad_window(
    report: LedgerReport, key: Ed25519PublicKey, leaves: Sequence[bytes], size: int
) -> tuple[int, int]:
    """``[last good checkpoint size, first bad checkpoint size)`` over recomputed leaves."""
    tree = MerkleTree.from_leaf_hashes(leaves)
    good = 0
    for cp in _valid_history(report, key, size):
        if cp.size == 0:
            continue
        if cp.size > tree.size or tree.root(cp.size) != cp.root:
            return good, cp.size
        good = cp.size
    return good, size


def _verify_history(
    report: LedgerReport | None,
    checkpoint: Checkpoint,
    key: Ed25519PublicKey,
    leaves: Sequence[bytes],
    tail: int,
) -> VerificationResult:
    """All entries match the trusted checkpoint; every earlier signed checkpoint must agree too."""
    verified = 1
    if report is not None:
        history = [cp for cp in _valid_history(report, key, checkpoint.size) if cp != checkpoint]
        if history:
            tree = MerkleTree.from_leaf_hashes(leaves)
            for cp in history:
                if tree.root(cp.size) != cp.root:
                    return VerificationResult(
                        ok=False,
                        reason=(
                            f"signed checkpoint at size {cp.size} disagrees with the entries: "
                            "the ledger was rewritten after it was signed"
                        ),
                        size=checkpoint.size,
                        signature_ok=True,
                        bad_window=(0, cp.size),
                        unverified_tail=tail,
                    )
                verified += 1
    return VerificationResult(
        ok=True,
        reason=f"{checkpoint.size} entries reproduce the signed root of {checkpoint.origin}",
        size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        signature_ok=True,
        checkpoints_verified=verified,
        unverified_tail=tail,
    )
