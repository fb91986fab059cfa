"""HubSpot's API rate limits: a rolling ten-second burst window, a daily quota, and the CRM search
API's own per-second limit, with the ``X-HubSpot-RateLimit-*`` response headers.

Documented rules emulated here:

* Burst: private apps on Professional/Enterprise accounts get 190 requests per 10 seconds, daily
  650,000 (Professional) — https://developers.hubspot.com/changelog/increasing-our-api-limits and
  https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines.md. Both are
  constructor options; the default tier is Professional.
* Search: the CRM search endpoints are limited per account to 5 requests per second
  (https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm, "Limitations";
  an earlier changelog set it at 4/s: https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase).
* Headers ``X-HubSpot-RateLimit-Daily``/``-Daily-Remaining``/``-Secondly``/``-Secondly-Remaining``
  (https://developers.hubspot.com/changelog/rate-limit-headers-will-now-appear-for-oauth-authenticated-calls)
  and ``-Interval-Milliseconds``/``-Max``/``-Remaining`` for the rolling window
  (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines.md). OAuth-authenticated
  calls do not get the Daily pair (same changelog), private-app calls do.
* 429 bodies name the policy: ``TEN_SECONDLY_ROLLING``, ``SECONDLY`` or ``DAILY``
  (https://developers.hubspot.com/docs/api/usage-details).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

__all__ = ["Limited", "RateLimiter", "RateState"]


@dataclass(frozen=True, slots=True)
class Limited:
    """A refused request: which policy, its message, and how long until a slot frees."""

    policy: str
    message: str
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class RateState:
    """What the response headers report after a counted request."""

    burst_max: int
    burst_remaining: int
    interval_ms: int
    secondly: int
    secondly_remaining: int
    daily: int
    daily_remaining: int


class _Rolling:
    """Timestamps of accepted requests within the last ``window_s`` (monotonic clock)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.hits: deque[float] = deque()

    def prune(self, now: float) -> None:
        while self.hits and self.hits[0] <= now - self.window_s:
            self.hits.popleft()

    def count_since(self, since: float) -> int:
        # hits are sorted; count those strictly after ``since``
        return len(self.hits) - bisect_right(self.hits, since)


class RateLimiter:
    """Per-account limits of one emulated portal. Thread-safe.

    ``burst_limit`` requests per ``burst_window_s`` seconds (``None`` disables the burst check),
    ``search_per_second`` search requests per second (``None`` disables), ``daily_limit`` per day.
    """

    def __init__(
        self,
        *,
        burst_limit: int | None = 190,
        burst_window_s: float = 10.0,
        search_per_second: int | None = 5,
        daily_limit: int = 650_000,
    ) -> None:
        self._lock = threading.Lock()
        self.burst_limit = burst_limit
        self.burst_window_s = burst_window_s
        self.search_per_second = search_per_second
        self.daily_limit = daily_limit
        self._burst = _Rolling(burst_window_s)
        self._search = _Rolling(1.0)
        self._daily_used = 0
        self._day = self._today()

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86_400)

    def set_burst(self, limit: int | None, window_s: float | None = None) -> None:
        """Change the rolling burst window (``None`` disables it); the window's history is kept."""
        with self._lock:
            self.burst_limit = limit
            if window_s is not None:
                self.burst_window_s = window_s
                self._burst.window_s = window_s

    def set_search_limit(self, per_second: int | None) -> None:
        """Change the search API's per-second limit (``None`` disables it)."""
        with self._lock:
            self.search_per_second = per_second

    def set_daily_limit(self, limit: int) -> None:
        with self._lock:
            self.daily_limit = limit

    def reset(self) -> None:
        with self._lock:
            self._burst.hits.clear()
            self._search.hits.clear()
            self._daily_used = 0

    def hit(self, *, search: bool = False, now: float | None = None) -> Limited | RateState:
        """Count one API request (a search request also counts against the search limit).

        Returns the header state, or :class:`Limited` (the request is then not counted).
        """
        t = time.monotonic() if now is None else now
        with self._lock:
            today = self._today()
            if today != self._day:
                self._day, self._daily_used = today, 0
            self._burst.prune(t)
            self._search.prune(t)
            if self._daily_used >= self.daily_limit:
                midnight = (today + 1) * 86_400 - time.time()
                return Limited("DAILY", "You have reached your daily limit.", midnight)
            if self.burst_limit is not None and len(self._burst.hits) >= self.burst_limit:
                wait = self._burst.hits[0] + self.burst_window_s - t
                return Limited(
                    "TEN_SECONDLY_ROLLING",
                    "You have reached your ten_secondly_rolling limit.",
                    max(wait, 0.001),
                )
            if (
                search
                and self.search_per_second is not None
                and len(self._search.hits) >= self.search_per_second
            ):
                wait = self._search.hits[0] + 1.0 - t
                return Limited("SECONDLY", "You have reached your secondly limit.", max(wait, 0.001))
            self._burst.hits.append(t)
            if search:
                self._search.hits.append(t)
            self._daily_used += 1
            return self._state(t)

    def _state(self, t: float) -> RateState:
        burst_max = self.burst_limit if self.burst_limit is not None else 1_000_000
        secondly = max(1, math.ceil(burst_max * 1.0 / max(self.burst_window_s, 1.0)))
        in_last_second = self._burst.count_since(t - 1.0)
        return RateState(
            burst_max=burst_max,
            burst_remaining=max(burst_max - len(self._burst.hits), 0),
            interval_ms=int(self.burst_window_s * 1000),
            secondly=secondly,
            secondly_remaining=max(secondly - in_last_second, 0),
            daily=self.daily_limit,
            daily_remaining=max(self.daily_limit - self._daily_used, 0),
        )

    def headers(self, state: RateState, *, private_app: bool) -> dict[str, str]:
        """The ``X-HubSpot-RateLimit-*`` headers; the Daily pair only for private-app calls."""
        out = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(state.interval_ms),
            "X-HubSpot-RateLimit-Max": str(state.burst_max),
            "X-HubSpot-RateLimit-Remaining": str(state.burst_remaining),
            "X-HubSpot-RateLimit-Secondly": str(state.secondly),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(state.secondly_remaining),
        }
        if private_app:
            out["X-HubSpot-RateLimit-Daily"] = str(state.daily)
            out["X-HubSpot-RateLimit-Daily-Remaining"] = str(state.daily_remaining)
        return out
