"""HubSpot error mapping, token refresh, rate limits and pacing, and describe(), against the sandbox:
401 → one refresh then AuthError; 429 → RateLimited with the vendor's Retry-After, honoured before the
next request; burst-window pacing from the X-HubSpot-RateLimit-* headers; 5xx, dropped connections,
timeouts and malformed bodies → TransientError; no message carries a token or a record value."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from connectors.base import diff_schema
from connectors.hubspot import HubSpotConnector
from connectors.testing import read_all
from sandbox.faults import FaultPlan, FaultRule
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState
from schemas.errors import AuthError, RateLimited, TransientError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import SandboxTokens, portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
FULL = StreamState(mode=ReadMode.FULL)
FIELDS = ["email", "firstname"]


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 250, "companies": 10})


class RecordingSleep:
    """Really sleeps (the sandbox's windows run on real time) and records each pause."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        time.sleep(max(seconds, 0.0))


class DeadRefresh(SandboxTokens):
    """A TokenSource whose refresh hands out a token HubSpot does not know."""

    def refresh(self, rejected: str) -> str:
        self.refreshes += 1
        return "pat-na1-00000000-dead-beef-0000-000000000000"


def _fault(served: Served, **rule: object) -> None:
    served.hs.faults.set_plan(FaultPlan(seed=1, rules=[FaultRule(endpoint="hs.list.contacts", **rule)]))


# -- 401 ------------------------------------------------------------------------------------------


def test_a_401_refreshes_once_then_fails_as_auth_without_the_token(served: Served, connect: Connect) -> None:
    tokens = DeadRefresh(served.hs)
    conn = connect(served, tokens)
    served.hs.oauth.expire_all_access_tokens()
    served.hs.calls.clear()
    with pytest.raises(AuthError) as err:
        conn.read_page("contacts", FULL, 10, FIELDS)
    assert tokens.refreshes == 1
    assert [c.status for c in served.hs.calls.all()] == [401, 401]
    assert tokens.access_token() not in str(err.value) and "pat-na1" not in str(err.value)
    assert err.value.code == "INVALID_AUTHENTICATION"
    assert err.value.__context__ is None


def test_tokens_dying_mid_read_refresh_and_the_read_completes_exactly_once(
    served: Served, connect: Connect
) -> None:
    tokens = SandboxTokens(served.hs)
    conn = connect(served, tokens)
    served.hs.oauth.expire_after_calls = 4  # every access token dies after 4 calls
    res = read_all(conn, "contacts", FULL, page_size=10, fields=FIELDS)
    ids = [r["hs_object_id"] for r in res.records]
    assert len(ids) == len(set(ids)) == 250
    assert tokens.refreshes == 25 // 4  # 26 list calls (the last one is empty), 4 per token
    assert sum(c.status == 401 for c in served.hs.calls.all()) == tokens.refreshes


# -- 429, Retry-After and pacing ------------------------------------------------------------------


def test_burst_window_429_is_rate_limited_and_retry_after_is_honoured(
    served: Served, connect: Connect
) -> None:
    served.hs.set_burst_limit(3, 1.5)
    sleep = RecordingSleep()
    conn = connect(served, rate_limit_reserve=0.0, sleep=sleep)  # no pacing: run into the window
    state = FULL
    for _ in range(3):
        state = conn.read_page("contacts", state, 10, FIELDS).next_state
    with pytest.raises(RateLimited) as err:
        conn.read_page("contacts", state, 10, FIELDS)
    assert err.value.code == "TEN_SECONDLY_ROLLING"
    assert err.value.retry_after == 2.0  # the sandbox's Retry-After: ceil(1.5 s window)
    assert [c.status for c in served.hs.calls.all()] == [200, 200, 200, 429]
    page = conn.read_page("contacts", state, 10, FIELDS)  # waits out Retry-After before sending
    assert page.records and page.calls == 1
    assert sleep.pauses and max(sleep.pauses) > 1.9
    assert [c.status for c in served.hs.calls.all()][-1] == 200


def test_a_retry_after_longer_than_max_pause_raises_without_a_call(served: Served, connect: Connect) -> None:
    _fault(served, rate_limit=1.0, retry_after_s=7)
    conn = connect(served, max_pause_s=1.0)
    with pytest.raises(RateLimited) as err:
        conn.read_page("contacts", FULL, 10, FIELDS)
    assert err.value.retry_after == 7.0
    served.hs.faults.clear()
    before = len(served.hs.calls.all())
    with pytest.raises(RateLimited):
        conn.read_page("contacts", FULL, 10, FIELDS)
    assert len(served.hs.calls.all()) == before, "sent a request inside Retry-After"


def test_pacing_from_rate_limit_headers_avoids_429(served: Served, connect: Connect) -> None:
    served.hs.set_burst_limit(20, 1.0)
    sleep = RecordingSleep()
    conn = connect(served, sleep=sleep)
    res = read_all(conn, "contacts", FULL, page_size=10, fields=FIELDS)
    assert len(res.records) == 250
    assert all(c.status == 200 for c in served.hs.calls.all())
    assert sleep.pauses, "the client never slowed down"


# -- transient failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        {"malformed": 1.0},
        {"server_error": 1.0, "server_error_status": 503},
        {"server_error": 1.0, "server_error_status": 500},
        {"drop": 1.0},
        {"timeout": 1.0, "timeout_s": 0.6},
    ],
    ids=["malformed", "503", "500", "drop", "timeout"],
)
def test_transient_failures_map_to_transient_error(
    served: Served, connect: Connect, rule: dict[str, object]
) -> None:
    _fault(served, **rule)
    conn = connect(served, read_timeout_s=0.3)
    served.hs.calls.clear()
    with pytest.raises(TransientError) as err:
        conn.read_page("contacts", FULL, 10, FIELDS)
    assert "trunc" not in str(err.value)  # the malformed body's text stays out of the message
    assert err.value.__context__ is None and err.value.__cause__ is None  # no vendor exception rides along
    assert len(served.hs.calls.all()) <= 1, "urllib3 retried behind our back"
    served.hs.faults.clear()
    assert conn.read_page("contacts", FULL, 10, FIELDS).records  # the connector is still usable


# -- describe -------------------------------------------------------------------------------------


def test_describe_reports_types_writability_uniqueness_and_drift(served: Served, connect: Connect) -> None:
    conn = connect(served)
    before = conn.describe("contacts")
    by_name = {f.name: f for f in before.fields}
    assert by_name["email"].unique and by_name["email"].writable
    assert by_name["lead_score"].type == "number"
    assert not by_name["lastmodifieddate"].writable and not by_name["hs_object_id"].writable
    assert by_name["external_id"].unique and by_name["external_id"].external_id
    served.hs.add_property("contacts", "favourite_colour")
    served.hs.drop_property("contacts", "jobtitle")
    served.hs.retype_property("contacts", "lead_score", "string")
    drift = diff_schema(before, conn.describe("contacts"))
    assert drift.added == ("favourite_colour",)
    assert drift.removed == ("jobtitle",)
    assert drift.retyped == (("lead_score", "number", "string"),)


def test_check_reports_a_dead_token_without_raising(served: Served, connect: Connect) -> None:
    conn = connect(served, DeadRefresh(served.hs))
    assert conn.check().ok
    served.hs.oauth.expire_all_access_tokens()
    result = conn.check()
    assert not result.ok and result.message.startswith("auth")
