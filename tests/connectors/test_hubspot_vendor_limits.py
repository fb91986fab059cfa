"""HubSpot's rate limits as production portals apply them, through the real connector: a 429 without
``Retry-After`` (HubSpot documents none), the DAILY quota (stop until the reset, not a retry a
second), and search answers that carry no ``X-HubSpot-RateLimit-*`` headers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.limits import retry_after_429, until_daily_reset
from connectors.testing import read_all
from schemas.connector import ReadMode, StreamState
from schemas.errors import RateLimited
from tests.connectors import hubspot_harness
from tests.connectors.test_hubspot_client import RecordingSleep
from tests.sandbox.hubspot_support import Served, served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
__all__ = ["served"]  # the 250-contact portal fixture, re-exported for pytest
Connect = Callable[..., HubSpotConnector]
FULL = StreamState(mode=ReadMode.FULL)
FIELDS = ["email"]


def test_a_429_without_retry_after_waits_for_the_burst_window_it_learned(
    served: Served, connect: Connect
) -> None:
    """Before: no Retry-After → a 1 s pause, inside a 2 s window → 429 again."""
    assert not served.hs.quirks.retry_after_header
    served.hs.set_burst_limit(3, 2.0)
    sleep = RecordingSleep()
    conn = connect(served, rate_limit_reserve=0.0, sleep=sleep)  # run into the window
    state = FULL
    for _ in range(3):
        state = conn.read_page("contacts", state, 10, FIELDS).next_state
    served.hs.calls.clear()
    page = conn.read_page("contacts", state, 10, FIELDS)
    assert len(page.records) == 10 and page.calls == 2
    assert [c.status for c in served.hs.calls.all()] == [429, 200]
    assert "Retry-After" not in str(served.hs.calls.all())  # nothing in the log carries it either
    assert sleep.pauses == [2.0]  # the interval of X-HubSpot-RateLimit-Interval-Milliseconds


def test_the_daily_quota_stops_the_read_until_the_reset_without_more_calls(
    served: Served, connect: Connect
) -> None:
    """Before: Retry-After absent → retry_after 1 s → the activity retried every second all day."""
    served.hs.set_daily_limit(2)
    conn = connect(served, request_attempts=1)
    state = conn.read_page("contacts", FULL, 10, FIELDS).next_state
    state = conn.read_page("contacts", state, 10, FIELDS).next_state
    with pytest.raises(RateLimited) as err:
        conn.read_page("contacts", state, 10, FIELDS)
    assert err.value.code == "DAILY"
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 900
    with pytest.raises(RateLimited):  # later calls in this process wait without asking again
        conn.read_page("contacts", state, 10, FIELDS)
    assert [c.status for c in served.hs.calls.all()] == [200, 200, 429]


def test_a_known_portal_time_zone_waits_until_its_midnight(served: Served, connect: Connect) -> None:
    served.hs.set_daily_limit(0)
    conn = connect(served, portal_utc_offset_min=0)  # the sandbox's day is UTC
    with pytest.raises(RateLimited) as err:
        conn.read_page("contacts", FULL, 10, FIELDS)
    now = time.time()
    midnight = (now // 86_400 + 1) * 86_400
    assert err.value.code == "DAILY"
    assert abs((err.value.retry_after or 0) - (midnight - now)) < 5
    assert len(served.hs.calls.all()) == 1


@pytest.mark.parametrize(
    ("offset", "now", "expected"),
    [
        (None, datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC), 450.0),  # next quarter hour
        (0, datetime(2026, 3, 1, 23, 0, tzinfo=UTC), 3600.0),
        (-300, datetime(2026, 3, 1, 23, 0, tzinfo=UTC), 6 * 3600.0),  # US Eastern: 18:00 local
        (330, datetime(2026, 3, 1, 18, 0, tzinfo=UTC), 30 * 60.0),  # India: 23:30 local
    ],
)
def test_until_daily_reset(offset: int | None, now: datetime, expected: float) -> None:
    assert until_daily_reset(now, offset) == expected


def test_retry_after_by_policy() -> None:
    assert retry_after_429("SECONDLY", {}, burst_interval_s=10.0, utc_offset_min=None) == 1.0
    assert retry_after_429("TEN_SECONDLY_ROLLING", {}, burst_interval_s=None, utc_offset_min=None) == 10.0
    assert retry_after_429("DAILY", {"Retry-After": "7"}, burst_interval_s=None, utc_offset_min=0) == 7.0


def test_search_answers_carry_no_rate_limit_headers_and_pacing_still_holds(
    served: Served, connect: Connect
) -> None:
    """Search is paced by the client-side search window alone (4/s against HubSpot's 5/s)."""
    served.hs.set_search_limit(5)
    conn = connect(served, search_rate_per_s=4.0)
    client = served.client().crm.contacts.search_api
    _, status, headers = client.do_search_with_http_info({"limit": 1})
    assert status == 200 and not [h for h in headers if h.lower().startswith("x-hubspot-ratelimit")]
    full = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS)
    ids = sorted((r.id for r in served.hs.store.dump("contacts")), key=int)
    stamp = served.hs.store.clock.now_ms() + 5
    for k, record_id in enumerate(ids):  # 250 changes on 250 timestamps: many small search pages
        served.hs.store.clock.freeze(stamp + k)
        served.hs.update_record("contacts", record_id, {"city": f"C{k}"})
    served.hs.store.clock.unfreeze()
    while served.hs.store.clock.now_ms() <= stamp + len(ids):
        time.sleep(0.001)
    served.hs.calls.clear()
    res = read_all(conn, "contacts", full.final_state, page_size=20, fields=FIELDS, max_pages=100)
    assert sorted((str(r["hs_object_id"]) for r in res.records), key=int) == ids
    statuses = [c.status for c in served.hs.calls.all() if c.endpoint == "hs.search.contacts"]
    assert len(statuses) >= 12 and set(statuses) == {200}, "a search ran into the 5/s limit"
