"""The checkpoint journal: every checkpoint a signer signed, kept where a database writer cannot drop it.

Someone who can write the database can rewrite lineage rows and delete the checkpoint rows that
would betray it. The journal is an append-only JSON-lines file beside the signing key (default
``<data_dir>/ledger-checkpoints.jsonl``, mode 0600): one signed :class:`~schemas.lineage.Checkpoint`
per line, appended under an exclusive ``flock`` and fsynced before the checkpoint is stored in the
database. :meth:`Ledger.checkpoint <governance.lineage.Ledger.checkpoint>` proves the ledger
consistent with the latest journal entry of its origin before it signs again, and reports carry
the journal's chain (:meth:`chain`).

Every line is checked against the signer's public key when it is read: a line that does not parse,
or carries this key's id and does not verify, is an :class:`~schemas.errors.IntegrityError` naming
the line, never skipped. Lines of other keys (several signing keys in one data dir, or an earlier
key after a rotation) belong to their own signers and are passed over. A
signer without a journal file (:meth:`CheckpointSigner.generate
<governance.lineage.CheckpointSigner.generate>`) keeps the journal in memory. Instances read only
what other processes appended since their last read, and keep only the latest checkpoint per origin.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable
from pathlib import Path

from schemas.errors import IntegrityError
from schemas.lineage import Checkpoint
from store.files import append_private, refuse_if_shared

__all__ = ["JOURNAL_FILE", "CheckpointJournal"]

JOURNAL_FILE = "ledger-checkpoints.jsonl"
"""The journal's file name, beside the signing key."""


class CheckpointJournal:
    """Append-only record of signed checkpoints (a file, or memory when ``path`` is ``None``).

    ``key_id`` is the signer's key id; ``check`` raises :class:`IntegrityError` for a checkpoint the
    signer did not sign. Thread-safe.
    """

    def __init__(self, path: Path | None, key_id: str, check: Callable[[Checkpoint], None]) -> None:
        self.path = path
        self.key_id = key_id
        self._check = check
        self._lock = threading.Lock()
        self._offset = 0
        self._lines = 0
        self._latest: dict[str, Checkpoint] = {}
        self._memory: list[Checkpoint] = []

    def record(self, checkpoint: Checkpoint) -> None:
        """Append a checkpoint just signed (durable when this returns)."""
        self._check(checkpoint)
        with self._lock:
            if self.path is None:
                self._memory.append(checkpoint)
            else:
                append_private(self.path, checkpoint.model_dump_json().encode("utf-8") + b"\n")
        self._keep(checkpoint)

    def latest(self, origin: str) -> Checkpoint | None:
        """The largest checkpoint ever signed for ``origin`` (by any process sharing the file)."""
        self._catch_up()
        with self._lock:
            return self._latest.get(origin)

    def chain(self, origin: str, *, max_size: int | None = None) -> list[Checkpoint]:
        """Every journaled checkpoint of ``origin`` (at most ``max_size``), by size then time."""
        if self.path is None:
            with self._lock:
                found = [cp for cp in self._memory if cp.origin == origin]
        else:
            found = [cp for cp in self._read(0)[0] if cp.origin == origin]
        found = [cp for cp in found if max_size is None or cp.size <= max_size]
        return sorted(set(found), key=lambda cp: (cp.size, cp.timestamp))

    def _keep(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            current = self._latest.get(checkpoint.origin)
            if current is None or checkpoint.size >= current.size:
                self._latest[checkpoint.origin] = checkpoint

    def _catch_up(self) -> None:
        if self.path is None:
            return
        with self._lock:
            offset, lines = self._offset, self._lines
        found, offset, lines = self._read(offset, lines)
        for cp in found:
            self._keep(cp)
        with self._lock:
            self._offset, self._lines = max(self._offset, offset), max(self._lines, lines)

    def _read(self, offset: int, lines: int = 0) -> tuple[list[Checkpoint], int, int]:
        """Complete lines from byte ``offset`` on (line numbers continue from ``lines``)."""
        assert self.path is not None
        if not self.path.exists():
            if offset:
                raise IntegrityError(
                    f"checkpoint journal {self.path} was removed while crmhub used it",
                    code="ledger_inconsistent",
                )
            return [], 0, 0
        refuse_if_shared(self.path, "checkpoint journal")
        with self.path.open("rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        found: list[Checkpoint] = []
        for raw in data[:end].splitlines():
            lines += 1
            try:
                checkpoint = Checkpoint.model_validate_json(raw)
                if checkpoint.key_id != self.key_id:
                    continue  # another signer's line
                self._check(checkpoint)
            except (ValueError, IntegrityError) as exc:
                raise IntegrityError(
                    f"checkpoint journal {self.path} line {lines} is not a well-formed checkpoint signed by "
                    f"key {self.key_id} (edited by hand); restore the journal from backup",
                    code="ledger_inconsistent",
                ) from exc
            found.append(checkpoint)
        return found, offset + end, lines
