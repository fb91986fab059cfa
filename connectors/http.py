"""Small HTTP helpers shared by the connectors and the OAuth client (no vendor SDK here): reading
``Retry-After`` and the bounded per-request retry both connectors run every call through."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from pydantic import BaseModel, Field

from schemas.errors import CrmhubError, RateLimited, TransientError

__all__ = ["RequestRetry", "RetryConfig", "parse_retry_after", "send_with_retries"]

T = TypeVar("T")
_log = logging.getLogger("crmhub.connectors.http")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3: delta-seconds or an
    HTTP date); ``None`` if absent or unreadable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RequestRetry:
    """How hard one request is retried in the connector before its error goes up to the activity.

    A vendor that says "wait" (429 with ``Retry-After``) is waited out exactly when the wait fits in
    ``budget_s``; a transient failure (5xx, timeout, dropped connection) of an *idempotent* request
    (a read, an upsert by external id, an update or delete by id) is resent after an exponential
    pause with jitter. A request that is not idempotent (a create) is resent only after a rate
    limit, which the vendor answers before doing anything. ``attempts`` counts sends, the first one
    included; ``budget_s`` bounds the pauses of one request and ``max_pause_s`` any single one, so
    an activity's heartbeat is never starved. Longer outages (a Retry-After of minutes, a daily quota)
    are the activity retry's job.
    """

    attempts: int = 6
    budget_s: float = 30.0
    max_pause_s: float = 10.0
    base_s: float = 0.5
    cap_s: float = 8.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Pause before send ``attempt + 1`` after a transient failure: half fixed, half jitter."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RetryConfig(BaseModel):
    """The per-request retry settings every connector config carries (a mixin of their models)."""

    request_attempts: int = Field(
        6, ge=1, le=20, description="sends per request, the first included (1 = no client-side retry)"
    )
    retry_budget_s: float = Field(
        30.0, ge=0, description="longest total pause of one request's retries; keep it below the heartbeat"
    )

    def request_retry(self, max_pause_s: float) -> RequestRetry:
        return RequestRetry(
            attempts=self.request_attempts, budget_s=self.retry_budget_s, max_pause_s=max_pause_s
        )


def send_with_retries(
    send: Callable[[], T],
    *,
    what: str,
    idempotent: bool,
    policy: RequestRetry,
    sleep: Callable[[float], None],
    rng: random.Random,
    on_retry: Callable[[CrmhubError, float], None] | None = None,
    final: tuple[type[CrmhubError], ...] = (),
) -> T:
    """``send()`` until it answers, retrying per ``policy``; the last error is raised unchanged.

    ``send`` raises :mod:`schemas.errors` errors only (the clients map vendor failures first).
    ``final`` lists transient errors the same request can never cure (an expired query locator: the
    caller must ask differently). ``on_retry(error, pause)`` is told of every resend.
    """
    waited = 0.0
    attempt = 1
    while True:
        try:
            return send()
        except final:
            raise
        except RateLimited as exc:
            error: CrmhubError = exc
            pause = exc.retry_after if exc.retry_after is not None else policy.backoff(attempt, rng)
        except TransientError as exc:
            if not idempotent:
                raise
            error, pause = exc, policy.backoff(attempt, rng)
        if attempt >= policy.attempts or pause > policy.max_pause_s or waited + pause > policy.budget_s:
            raise error
        _log.info(
            "%s: %s; resending in %.2f s (attempt %d of %d)",
            what,
            error.code or type(error).__name__,
            pause,
            attempt + 1,
            policy.attempts,
        )
        if on_retry is not None:
            on_retry(error, pause)
        if pause > 0:
            sleep(pause)
        waited += pause
        attempt += 1
