"""The audit report: a ledger's entries and signed checkpoints in one self-contained document.

A :class:`~schemas.lineage.LedgerReport` (format ``crmhub.lineage.report/2``) holds the tenant,
origin, optional public key, the signed checkpoints oldest first (the last covers every entry), the
RFC 9162 consistency proofs between consecutive checkpoints (computed from the listed leaf hashes,
so a rewritten entry shows as a proof that fails against the signed roots) and each entry's index,
stored leaf hash (base64) and canonical event text. :meth:`Ledger.export_report
<governance.lineage.Ledger.export_report>` builds one from the database, :func:`build_report` from
event bytes held in memory; both assemble it here, so the two cannot drift apart.
:func:`report_to_json` / :func:`report_from_json` are what an auditor downloads and reads back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from governance.lineage._signing import PublicKeyLike, b64, encode_public_key
from governance.merkle import MerkleTree, leaf_hash
from schemas.errors import IntegrityError
from schemas.lineage import Checkpoint, ConsistencyProof, LedgerReport, ReportEntry

__all__ = ["assemble_report", "build_report", "chain_proofs", "report_from_json", "report_to_json"]


def assemble_report(
    tenant: str,
    origin: str,
    entries: Iterable[tuple[int, bytes, bytes]],
    checkpoints: Sequence[Checkpoint],
    public_key: PublicKeyLike | None,
) -> LedgerReport:
    """A report of ``entries`` given as ``(index, leaf hash, canonical event bytes)``."""
    listed = list(entries)
    ordered = sorted(checkpoints, key=lambda cp: (cp.size, cp.timestamp))
    try:
        tree = MerkleTree.from_leaf_hashes([leaf for _, leaf, _ in listed])
    except ValueError:  # a stored leaf hash is not 32 bytes: no proofs, verification names the damage
        tree = MerkleTree()
    return LedgerReport(
        tenant=tenant,
        origin=origin,
        public_key=None if public_key is None else encode_public_key(public_key),
        checkpoints=tuple(ordered),
        consistency=chain_proofs(tree, ordered),
        entries=tuple(
            ReportEntry(index=index, leaf_hash=b64(leaf), event=data.decode("utf-8"))
            for index, leaf, data in listed
        ),
    )


def chain_proofs(tree: MerkleTree, checkpoints: Sequence[Checkpoint]) -> tuple[ConsistencyProof, ...]:
    """RFC 9162 consistency proofs from each checkpoint (of size ≥ 1) to the next one signed by the
    same key, over ``tree`` (sorted by size, one proof per pair of sizes).

    A pair the tree cannot prove (it lacks entries) gets no proof: verification names it missing."""
    pairs: set[tuple[int, int]] = set()
    for key_id in {cp.key_id for cp in checkpoints}:
        for old, new in pairwise([cp for cp in checkpoints if cp.key_id == key_id]):
            if old.size >= 1 and new.size <= tree.size:
                pairs.add((old.size, new.size))
    return tuple(
        ConsistencyProof(size1=a, size2=b, hashes=tuple(b64(h) for h in tree.consistency_proof(a, b)))
        for a, b in sorted(pairs)
    )


def build_report(
    tenant: str,
    events: Sequence[bytes],
    checkpoints: Sequence[Checkpoint],
    *,
    origin: str | None = None,
    public_key: PublicKeyLike | None = None,
) -> LedgerReport:
    """A report over canonical event bytes held in memory (entries numbered from 0)."""
    return assemble_report(
        tenant,
        origin or f"crmhub/{tenant}",
        ((i, leaf_hash(data), data) for i, data in enumerate(events)),
        checkpoints,
        public_key,
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
