"""Offline verification of a ledger export: signature, every leaf, the root, the signed history.

:func:`verify` needs only the report (or the bare list of event bytes), the checkpoint the auditor
trusts and the public key — no database. It never raises for bad evidence: the
:class:`~schemas.lineage.VerificationResult` says what failed and, where it can be localized, the
first bad index or the window of entries the damage lies in (rules in :mod:`governance.lineage`).
A report whose entries match must also agree with every earlier signed checkpoint it lists.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.lineage._report import report_from_json
from governance.lineage._signing import PublicKeyLike, key_id_for, load_public_key, verify_checkpoint
from governance.merkle import MerkleTree, leaf_hash, root_from_leaf_hashes
from schemas.errors import IntegrityError
from schemas.lineage import Checkpoint, LedgerReport, ReportEntry, VerificationResult

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
) -> VerificationResult:
    """Verify a ledger export offline against a trusted checkpoint and the ledger's public key.

    ``source`` is a :class:`LedgerReport`, its JSON, or the bare list of canonical event bytes.
    Entries beyond ``checkpoint.size`` are not judged (counted in ``unverified_tail``). Never
    raises for bad evidence: the result says what failed and, when localizable, where
    (see :mod:`governance.lineage` for the localization rules).
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
