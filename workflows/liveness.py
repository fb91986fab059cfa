"""Heartbeats that outlast a slow vendor call.

An activity heartbeats its resume point after each unit of work (a staged part, a written part). One
unit can take longer than the heartbeat timeout when the vendor is slow: a paced burst window, a
Retry-After waited out, a request resent after a timeout (connectors/http.py). Temporal would then
presume the worker dead and start a second attempt *beside the live one* — two writers on one batch,
two clients sharing one vendor rate limit. :class:`Keepalive` re-sends the last resume point from a
helper thread every third of the heartbeat timeout while the attempt is alive; it never sends a
point the attempt has not reached (only what :meth:`Keepalive.beat` was given, or the details the
attempt started from). A worker that dies takes its ticker with it, so a dead worker is still
noticed within one heartbeat timeout.

It also shields the attempt from Temporal's thread-cancel exception until :meth:`Keepalive.stop`:
the SDK raises it asynchronously into the activity's thread, which can land in the middle of an
HTTP exchange (leaving a TLS socket outside its pool) or between a vendor write and the record of
its outcome. Sync activities stop cooperatively instead — they check ``activity.is_cancelled()``
between units of work — and a cancellation still pending at ``stop()`` is raised there, after the
caller has closed its connector.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from temporalio import activity

__all__ = ["Keepalive"]


class Keepalive:
    """The heartbeats of one sync activity attempt (use from the activity's own thread)."""

    def __init__(self, every_s: float | None) -> None:
        self._every_s = every_s
        self._lock = threading.Lock()
        # Until the first beat: the details this attempt resumed from (re-sending nothing would
        # erase them, and a retry after this attempt would start the batch over).
        self._details: Sequence[Any] = tuple(activity.info().heartbeat_details)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shield: AbstractContextManager[None] | None = None

    @classmethod
    def start(cls) -> Keepalive:
        """Start ticking at a third of the activity's heartbeat timeout (none: no ticker)."""
        timeout = activity.info().heartbeat_timeout
        keepalive = cls(timeout.total_seconds() / 3 if timeout else None)
        keepalive._shield = activity.shield_thread_cancel_exception()
        keepalive._shield.__enter__()
        if keepalive._every_s:
            context = contextvars.copy_context()  # the activity context, for activity.heartbeat
            keepalive._thread = threading.Thread(
                target=context.run, args=(keepalive._tick,), name="crmhub-keepalive", daemon=True
            )
            keepalive._thread.start()
        return keepalive

    def beat(self, *details: Any) -> None:
        """Record and send a new resume point."""
        with self._lock:
            self._details = details
            activity.heartbeat(*details)

    def stop(self) -> None:
        """Stop ticking, then lift the shield (a pending cancellation is raised from here)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._shield is not None:
            shield, self._shield = self._shield, None
            shield.__exit__(None, None, None)

    def _tick(self) -> None:
        assert self._every_s is not None
        while not self._stop.wait(self._every_s):
            with self._lock:
                if self._stop.is_set():
                    return
                activity.heartbeat(*self._details)
