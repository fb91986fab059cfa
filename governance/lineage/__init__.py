"""The tamper-evident lineage ledger: cite a run, append events, sign checkpoints, prove, export, verify.

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

One concept a module, all imported from here (the modules are private, as in httpx):

=============  ===================================================================================
``_run``       :class:`RunRef` (a run's citation) and the events it makes (:class:`EventFields`,
               :class:`MoveFields`)
``_signing``   :class:`CheckpointSigner`, :func:`verify_checkpoint`, :func:`load_public_key`,
               :func:`key_id_for`, :data:`PublicKeyLike`
``_journal``   :class:`CheckpointJournal`: every checkpoint a signer signed, outside the database
``_ledger``    :class:`Ledger`: append, read, roots, checkpoints (consistency-checked before
               signing: :class:`LedgerInconsistent`), inclusion/consistency proofs
``_report``    :func:`build_report`, :func:`report_to_json`, :func:`report_from_json`
``_verify``    :func:`verify` and its checks of the signed checkpoint history
=============  ===================================================================================
"""

from governance.lineage._journal import CheckpointJournal
from governance.lineage._ledger import Ledger, LedgerInconsistent
from governance.lineage._report import build_report, report_from_json, report_to_json
from governance.lineage._run import EventFields, MoveFields, RunRef
from governance.lineage._signing import (
    CheckpointSigner,
    PublicKeyLike,
    key_id_for,
    load_public_key,
    verify_checkpoint,
)
from governance.lineage._verify import verify

__all__ = [
    "CheckpointJournal",
    "CheckpointSigner",
    "EventFields",
    "Ledger",
    "LedgerInconsistent",
    "MoveFields",
    "PublicKeyLike",
    "RunRef",
    "build_report",
    "key_id_for",
    "load_public_key",
    "report_from_json",
    "report_to_json",
    "verify",
    "verify_checkpoint",
]
