"""Seeded fault injection for the sandbox CRMs, per endpoint; off by default.

A :class:`FaultPlan` lists rules matched against an endpoint name (``fnmatch`` patterns such as
``"sf.query*"`` or ``"hs.search.*"``). Each request asks the :class:`FaultInjector` for a
:class:`FaultDecision` (latency to add, and at most one fault); the vendor app renders the fault
in its vendor's documented shape. Decisions come from one seeded RNG, so a run with the same seed
and the same request sequence injects the same faults.

Faults: latency (+ jitter), 429 with Retry-After, 5xx, dropped connection (response cut short),
timeout (the server sleeps past the client's read timeout, then drops), malformed body, a lost
answer (the request is carried out — a write is applied — and the response cut short: what a
gateway timeout after the vendor committed looks like to the client), and access-token expiry after
N calls. Quotas and burst windows are vendor rules: see
:class:`SlidingWindow` and the vendor apps.
"""

from __future__ import annotations

import fnmatch
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CallLog",
    "CallRecord",
    "FaultDecision",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "SlidingWindow",
]


class FaultKind(StrEnum):
    RATE_LIMIT = "rate_limit"  # 429 + Retry-After
    SERVER_ERROR = "server_error"  # 5xx
    DROP = "drop"  # connection cut mid-response
    TIMEOUT = "timeout"  # no answer within the client's timeout, then dropped
    MALFORMED = "malformed"  # 200 with a truncated/invalid body
    LOST = "lost"  # carried out (a write applied), then the connection cut before the answer


class FaultRule(BaseModel):
    """Faults for the endpoints whose name matches ``endpoint`` (fnmatch pattern)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "*"
    latency_ms: float = Field(0.0, ge=0)
    latency_jitter_ms: float = Field(0.0, ge=0)
    rate_limit: float = Field(0.0, ge=0, le=1, description="probability of a 429")
    retry_after_s: float = Field(1.0, ge=0)
    server_error: float = Field(0.0, ge=0, le=1, description="probability of a 5xx")
    server_error_status: int = Field(503, ge=500, le=599)
    drop: float = Field(0.0, ge=0, le=1, description="probability of a dropped connection")
    timeout: float = Field(0.0, ge=0, le=1, description="probability of a hang then drop")
    timeout_s: float = Field(5.0, ge=0)
    malformed: float = Field(0.0, ge=0, le=1, description="probability of a malformed body")
    lost: float = Field(0.0, ge=0, le=1, description="probability of an applied request's lost answer")


class FaultPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    rules: list[FaultRule] = Field(default_factory=list)
    token_expiry_after_calls: int | None = Field(
        None, ge=1, description="access tokens die after this many authenticated calls"
    )


@dataclass(frozen=True, slots=True)
class FaultDecision:
    latency_s: float = 0.0
    kind: FaultKind | None = None
    retry_after_s: float = 0.0
    status: int = 0
    timeout_s: float = 0.0


NO_FAULT = FaultDecision()


class FaultInjector:
    """Decides, per request, which fault (if any) to inject. Thread-safe."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.set_plan(plan or FaultPlan())

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)  # noqa: S311 - fault injection, not crypto

    def clear(self) -> None:
        self.set_plan(FaultPlan())

    def decide(self, endpoint: str) -> FaultDecision:
        plan = self._plan
        if not plan.rules:
            return NO_FAULT
        with self._lock:
            for rule in plan.rules:
                if not fnmatch.fnmatchcase(endpoint, rule.endpoint):
                    continue
                latency = rule.latency_ms + (
                    self._rng.uniform(0, rule.latency_jitter_ms) if rule.latency_jitter_ms else 0.0
                )
                roll = self._rng.random()
                for kind, p in (
                    (FaultKind.RATE_LIMIT, rule.rate_limit),
                    (FaultKind.SERVER_ERROR, rule.server_error),
                    (FaultKind.TIMEOUT, rule.timeout),
                    (FaultKind.DROP, rule.drop),
                    (FaultKind.MALFORMED, rule.malformed),
                    (FaultKind.LOST, rule.lost),  # last: earlier plans' seeded rolls are unchanged
                ):
                    if roll < p:
                        return FaultDecision(
                            latency / 1000, kind, rule.retry_after_s, rule.server_error_status, rule.timeout_s
                        )
                    roll -= p
                return FaultDecision(latency_s=latency / 1000)
        return NO_FAULT


@dataclass(frozen=True, slots=True)
class CallRecord:
    at: float  # time.monotonic() when the request arrived
    endpoint: str
    status: int
    token: str | None = None  # a hash prefix of the bearer token, for per-token accounting
    target: str = ""  # path and query string of the request (which page was asked for)


class CallLog:
    """Every request the sandbox answered (bounded), for API-call counts and fault-storm checks."""

    def __init__(self, maxlen: int = 2_000_000) -> None:
        self._calls: deque[CallRecord] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, record: CallRecord) -> None:
        with self._lock:
            self._calls.append(record)

    def all(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.all():
            out[c.endpoint] = out.get(c.endpoint, 0) + 1
        return dict(sorted(out.items()))

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


class SlidingWindow:
    """At most ``limit`` events per ``window_s`` seconds; :meth:`hit` says how long to wait if over."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def hit(self, now: float | None = None) -> float:
        """Count one event; 0.0 if allowed, else the seconds until a slot frees (event not counted)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            while self._hits and self._hits[0] <= t - self.window_s:
                self._hits.popleft()
            if len(self._hits) >= self.limit:
                return max(self._hits[0] + self.window_s - t, 0.001)
            self._hits.append(t)
            return 0.0

    def remaining(self, now: float | None = None) -> int:
        t = time.monotonic() if now is None else now
        with self._lock:
            while self._hits and self._hits[0] <= t - self.window_s:
                self._hits.popleft()
            return max(self.limit - len(self._hits), 0)
