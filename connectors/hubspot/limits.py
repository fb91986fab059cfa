"""How long to wait after a HubSpot 429, by the policy it names, when HubSpot sends no ``Retry-After``.

HubSpot documents ``Retry-After`` for its 477 only, not for 429
(https://developers.hubspot.com/docs/api-reference/error-handling), so a 429 is paced by the limit
its body names (``policyName``, https://developers.hubspot.com/docs/api/usage-details):

    TEN_SECONDLY_ROLLING   the rolling burst window: its interval as learned from the
                           X-HubSpot-RateLimit-Interval-Milliseconds header (10 s if never seen)
    SECONDLY               the search API's per-second limit: 1 s
    DAILY                  until the daily quota resets: midnight in the portal's time zone ("midnight
                           to midnight based on the time zone setting of the account",
                           https://developers.hubspot.com/changelog/2018-11-06-rate-limit-information-headers-will-be-included-in-http-responses);
                           with the zone unknown, the next quarter hour (every UTC offset in use is a
                           whole quarter hour), so a stopped sync asks at most 96 times a day instead
                           of once a second
    anything else          1 s

A ``Retry-After`` the vendor does send always wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from connectors.http import parse_retry_after

__all__ = ["DAILY", "retry_after_429", "until_daily_reset"]

DAILY = "DAILY"
_QUARTER_HOUR_S = 900
_DEFAULT_BURST_INTERVAL_S = 10.0


def until_daily_reset(now: datetime, utc_offset_min: int | None) -> float:
    """Seconds from ``now`` until the daily quota resets (see the module docstring)."""
    now = now.astimezone(UTC)
    if utc_offset_min is None:
        since_epoch = now.timestamp()
        return float(_QUARTER_HOUR_S - since_epoch % _QUARTER_HOUR_S)
    local = now + timedelta(minutes=utc_offset_min)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - local).total_seconds()


def retry_after_429(
    policy: str,
    headers: Mapping[str, str],
    *,
    burst_interval_s: float | None,
    utc_offset_min: int | None,
    now: datetime | None = None,
) -> float:
    """Seconds to wait after a 429 naming ``policy`` (see the module docstring)."""
    told = parse_retry_after(headers.get("Retry-After"))
    if told is not None:
        return told
    if policy == DAILY:
        return until_daily_reset(now or datetime.now(UTC), utc_offset_min)
    if policy == "TEN_SECONDLY_ROLLING":
        interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
        if interval and interval.isdigit():
            return int(interval) / 1000
        return burst_interval_s or _DEFAULT_BURST_INTERVAL_S
    return 1.0
