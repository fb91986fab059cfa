"""Pacing shared by the HubSpot clients of one portal in this process: rolling request windows (the
burst limit HubSpot announces in its ``X-HubSpot-RateLimit-*`` headers, and the search API's
per-second limit) and the Retry-After of the last 429.

:class:`~connectors.hubspot.client.HubSpotClient` takes its :class:`Portal` from :func:`portal_of`
(keyed by ``HubSpotConfig.rate_limit_key``, one per connection); the client decides when to wait,
this module only keeps the counts. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["Portal", "Window", "portal_of"]


class Window:
    """At most ``n`` requests per rolling ``period_s``, counted from when each *finished*, plus those
    in flight; safe to share between threads.

    Counting completions (not sends) keeps the server's view within the limit too: a request
    reaches HubSpot before it completes, so arrivals are at least as far apart as the slots.
    """

    def __init__(self, n: int, period_s: float) -> None:
        self.n = max(1, n)
        self.period_s = period_s
        self._done: deque[float] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()

    def resize(self, n: int, period_s: float) -> None:
        with self._lock:
            self.n, self.period_s = max(1, n), period_s

    def acquire(self, sleep: Callable[[float], None], now: Callable[[], float]) -> None:
        while True:
            with self._lock:
                t = now()
                while self._done and self._done[0] <= t - self.period_s:
                    self._done.popleft()
                if len(self._done) + self._in_flight < self.n:
                    self._in_flight += 1
                    return
                wait = (self._done[0] + self.period_s - t) if self._done else self.period_s / self.n
            sleep(max(wait, 0.001))

    def release(self, now: Callable[[], float]) -> None:
        with self._lock:
            self._in_flight -= 1
            self._done.append(now())


class Portal:
    """What every client of one portal in this process shares (keyed by ``HubSpotConfig.rate_limit_key``):
    the Retry-After of the last 429, the burst window as the ``X-HubSpot-RateLimit-*`` headers
    describe it (less the reserve), and the search API's per-second limit."""

    def __init__(self, search_rate_per_s: float) -> None:
        self.lock = threading.Lock()
        self.not_before = 0.0
        n = max(1, int(search_rate_per_s))
        self.search = Window(n, n / search_rate_per_s)
        self.burst: Window | None = None  # learned from the first answer's headers
        self.burst_interval_s: float | None = None  # the rolling window's length, as last reported

    def learn_burst(self, limit: int, interval_s: float, reserve: int) -> None:
        n = max(1, limit - reserve)
        with self.lock:
            if self.burst is None:
                self.burst = Window(n, interval_s)
            elif (self.burst.n, self.burst.period_s) != (n, interval_s):
                self.burst.resize(n, interval_s)


_PORTALS: dict[str, Portal] = {}
_PORTALS_LOCK = threading.Lock()


def portal_of(key: str | None, search_rate_per_s: float) -> Portal:
    """The shared :class:`Portal` of ``key`` (a fresh, unshared one when ``key`` is None)."""
    if key is None:
        return Portal(search_rate_per_s)
    with _PORTALS_LOCK:
        portal = _PORTALS.get(key)
        if portal is None:
            portal = _PORTALS[key] = Portal(search_rate_per_s)
        return portal
