"""Offline verification of a ledger export: signature, every leaf, the root, the signed history.

:func:`verify` needs only the report (or the bare list of event bytes), the checkpoint the auditor
trusts and the public key — no database. It never raises for bad evidence: the
:class:`~schemas.lineage.VerificationResult` says what failed and, where it can be localized, the
first bad index or the window of entries the damage lies in (rules in :mod:`governance.lineage`).
A report whose entries match must also agree with every earlier signed checkpoint it lists; a
format-2 report's consistency proofs must chain its checkpoints; no entry may lie beyond the
checkpoint (an unsigned tail fails); and a ``known`` checkpoint (the latest the auditor saw before)
must be a prefix of the verified tree (RFC 9162 consistency proof), else history was rewritten or
rolled back.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.lineage._report import report_from_json
from governance.lineage._signing import PublicKeyLike, key_id_for, load_public_key, verify_checkpoint
from governance.merkle import (
    MerkleProofError,
    MerkleTree,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
)
from schemas.errors import IntegrityError
from schemas.lineage import REPORT_FORMAT_V1, Checkpoint, LedgerReport, ReportEntry, VerificationResult

__all__ = ["verify"]


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
    *,
    known: Checkpoint | None = None,
) -> VerificationResult:
    """Verify a ledger export offline against a trusted checkpoint and the ledger's public key.

    ``source`` is a :class:`LedgerReport`, its JSON, or the bare list of canonical event bytes.
    Entries beyond ``checkpoint.size`` are not covered by its signature: the result is not ok and
    counts them in ``unverified_tail``. ``known`` is an earlier checkpoint the auditor trusts; the
    entries must extend it. Never raises for bad evidence: the result says what failed and, when
    localizable, where (see :mod:`governance.lineage` for the localization rules).
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
        result = _verify_history(report, checkpoint, key, leaves, tail, known)
        if result.ok and tail:
            reason = (
                f"{tail} entries ({size}..{size + tail - 1}) are not covered by any signed checkpoint: "
                f"they were added after the signature at size {size}; the first {size} entries verify"
            )
            return result.model_copy(update={"ok": False, "reason": reason})
        return result

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
    known: Checkpoint | None,
) -> VerificationResult:
    """All entries match the trusted checkpoint; every earlier signed checkpoint must agree too,
    a format-2 chain must prove itself, and ``known`` must be a prefix."""
    verified = 1
    failed = {"ok": False, "size": checkpoint.size, "signature_ok": True, "unverified_tail": tail}
    tree = MerkleTree.from_leaf_hashes(leaves)
    if report is not None:
        history = [cp for cp in _valid_history(report, key, checkpoint.size) if cp != checkpoint]
        for cp in history:
            if tree.root(cp.size) != cp.root:
                return VerificationResult(
                    reason=(
                        f"signed checkpoint at size {cp.size} disagrees with the entries: "
                        "the ledger was rewritten after it was signed"
                    ),
                    bad_window=(0, cp.size),
                    **failed,
                )
            verified += 1
        broken = None if report.format == REPORT_FORMAT_V1 else _broken_chain(report, key)
        if broken:
            return VerificationResult(reason=broken, **failed)
    suffix = ""
    if known is not None:
        problem = _not_extending(known, checkpoint, key, tree)
        if problem:
            return VerificationResult(reason=problem, **failed)
        suffix = f"; consistent with the known checkpoint at size {known.size}"
    return VerificationResult(
        ok=True,
        reason=f"{checkpoint.size} entries reproduce the signed root of {checkpoint.origin}{suffix}",
        size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        signature_ok=True,
        checkpoints_verified=verified,
        unverified_tail=tail,
    )


def _broken_chain(report: LedgerReport, key: Ed25519PublicKey) -> str | None:
    """Format 2: every checkpoint carrying ``key``'s id verifies (others, of other keys, are not
    judged) and each consecutive pair of them (older of size ≥ 1) has an RFC 9162 consistency proof
    that verifies; the first failure, described, or ``None``."""
    key_id = key_id_for(key)
    ours = [cp for cp in report.checkpoints if cp.key_id == key_id]
    for cp in ours:
        try:
            verify_checkpoint(cp, key)
        except IntegrityError as exc:
            return f"the report's checkpoint at size {cp.size} does not verify: {exc}"
    proofs = {(p.size1, p.size2): p for p in report.consistency}
    ordered = sorted(ours, key=lambda cp: (cp.size, cp.timestamp))
    for old, new in pairwise(ordered):
        if old.size < 1:
            continue
        proof = proofs.get((old.size, new.size))
        if proof is None:
            return (
                "the report lacks the consistency proof between its checkpoints at sizes "
                f"{old.size} and {new.size}"
            )
        try:
            hashes = [base64.b64decode(h) for h in proof.hashes]
            verify_consistency(old.size, new.size, hashes, old.root, new.root)
        except (MerkleProofError, ValueError) as exc:
            return (
                f"the consistency proof between the checkpoints at sizes {old.size} and {new.size} does not "
                f"verify ({exc}): the signed checkpoints do not describe one append-only history"
            )
    return None


def _not_extending(
    known: Checkpoint, checkpoint: Checkpoint, key: Ed25519PublicKey, tree: MerkleTree
) -> str | None:
    """Why the verified tree does not extend the auditor's ``known`` checkpoint, or ``None``."""
    try:
        verify_checkpoint(known, key)
    except IntegrityError as exc:
        return f"the known checkpoint does not verify with the pinned key: {exc}"
    if known.origin != checkpoint.origin:
        return f"the known checkpoint is for {known.origin}, the report for {checkpoint.origin}"
    if known.size > checkpoint.size:
        return (
            f"the report ends at size {checkpoint.size}, before the known checkpoint at size {known.size}: "
            "the ledger was rolled back, or this report is older than what you saw"
        )
    if known.size == 0:
        return None
    try:
        proof = tree.consistency_proof(known.size, checkpoint.size)
        verify_consistency(known.size, checkpoint.size, proof, known.root, checkpoint.root)
    except MerkleProofError:
        return (
            f"the report is not consistent with the known checkpoint at size {known.size}: the history you "
            "saw before was rewritten"
        )
    return None
