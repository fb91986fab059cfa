"""Late-committed writes: a long transaction stamps its rows when it writes them and makes them
visible only when it commits, so a reader can see rows with a *later* SystemModstamp first.

Salesforce's replication API documents the effect: while a long-running transaction is open,
``latestDateCovered`` stays at its start time, and "for safety" the next read should start there
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getupdated_getupdatedresult.htm);
connector maintainers report the resulting lost rows from production (airbytehq/airbyte#27146: rows
with a SystemModstamp below the saved cursor showed up after the sync had passed it).

Two ways in, both off by default:

* ``sb.late.transaction()`` — an explicit long transaction for tests: ``tx.create_record`` /
  ``update_record`` / ``delete_record`` write through the sandbox's own methods, stamped now, and
  nothing is visible until ``tx.commit()``;
* the fault mode ``sb.late.every = k`` with ``sb.late.delay_ms = d``: every k-th write of the
  Python handle (and so of the control API) is held ``d`` ms of the org's clock, then committed
  with its original stamp by the first API request after that.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.records import Clock

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["LateCommits", "Transaction"]

_OPEN: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "sf_open_transaction", default=None
)


@dataclass
class Transaction:
    """A long transaction: its writes are stamped when made and visible only after :meth:`commit`."""

    sb: SalesforceSandbox
    began_ms: int
    _writes: list[Callable[[], Any]] = field(default_factory=list)
    done: bool = False

    def _run(self, write: Callable[[], Any]) -> Any:
        if self.done:
            raise RuntimeError("transaction already committed")
        token = _OPEN.set(self)
        try:
            return write()
        finally:
            _OPEN.reset(token)

    def create_record(self, obj: str, fields: Mapping[str, Any]) -> str:
        return str(self._run(lambda: self.sb.create_record(obj, fields)))

    def update_record(self, obj: str, id: str, fields: Mapping[str, Any]) -> bool:
        return bool(self._run(lambda: self.sb.update_record(obj, id, fields)))

    def delete_record(self, obj: str, id: str) -> bool:
        return bool(self._run(lambda: self.sb.delete_record(obj, id)))

    def commit(self) -> None:
        """Make every write of the transaction visible, with the stamps they were written with."""
        self.sb.late.commit(self)


@dataclass(order=True)
class _Held:
    due_ms: int
    stamp_ms: int
    apply: Callable[[], Any] = field(compare=False)


class LateCommits:
    """Where the Python handle's writes go: applied now, held by an open transaction, or held for
    ``delay_ms`` (every ``every``-th write) when the fault mode is on."""

    def __init__(self, sandbox: SalesforceSandbox, clock: Clock) -> None:
        self.sb = sandbox
        self.clock = clock
        self.every = 0
        self.delay_ms = 30_000
        self._writes = 0
        self._held: list[_Held] = []
        self._open: list[Transaction] = []
        self._lock = threading.Lock()

    def transaction(self) -> Transaction:
        tx = Transaction(self.sb, self.clock.now_ms())
        with self._lock:
            self._open.append(tx)
        return tx

    def write(self, apply: Callable[[], Any]) -> None:
        """Apply a write (a closure holding its stamp) now, or hold it (see the class docstring)."""
        tx = _OPEN.get()
        if tx is not None:
            tx._writes.append(apply)
            return
        with self._lock:
            self._writes += 1
            if self.every > 0 and self._writes % self.every == 0:
                now = self.clock.now_ms()
                self._held.append(_Held(now + self.delay_ms, now, apply))
                self._held.sort()
                return
        apply()

    def commit(self, tx: Transaction) -> None:
        with self._lock:
            if tx in self._open:
                self._open.remove(tx)
        tx.done = True
        for apply in tx._writes:
            apply()

    def commit_due(self) -> int:
        """Commit held writes whose delay has passed (the org's clock); returns how many."""
        if not self._held:
            return 0
        now = self.clock.now_ms()
        with self._lock:
            due = [h for h in self._held if h.due_ms <= now]
            self._held = [h for h in self._held if h.due_ms > now]
        for h in due:
            h.apply()
        return len(due)

    def commit_all(self) -> int:
        """Commit every held write now (end of a test or benchmark run)."""
        with self._lock:
            held, self._held = self._held, []
        for h in held:
            h.apply()
        return len(held)

    def open_since(self) -> int | None:
        """Stamp of the oldest write still invisible (an open transaction or a held write), if any."""
        with self._lock:
            stamps = [h.stamp_ms for h in self._held] + [t.began_ms for t in self._open]
        return min(stamps) if stamps else None

    @contextlib.contextmanager
    def mode(self, every: int, delay_ms: int) -> Iterator[LateCommits]:
        """Turn the fault mode on for a block; held writes are committed when it ends."""
        self.every, self.delay_ms = every, delay_ms
        try:
            yield self
        finally:
            self.every = 0
            self.commit_all()
