"""HubSpot error mapping, token refresh, rate limits and pacing, and describe(), against the sandbox:
401 → one refresh then AuthError; 429 → RateLimited with the vendor's Retry-After, honoured before the
next request; burst-window pacing from the X-HubSpot-RateLimit-* headers; 5xx, dropped connections,
timeouts and malformed bodies → TransientError; resends of idempotent calls (bounded, never before a
Retry-After) make intermittent faults invisible; no message carries a token or a record value."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from connectors.base import diff_schema
from connectors.hubspot import HubSpotConnector
from connectors.hubspot import client as hubspot_client
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
    """Without client-side resends (``request_attempts=1``) the 429 goes up as RateLimited, and the
    next call waits out its Retry-After before sending."""
    served.hs.quirks.retry_after_header = True  # HubSpot does not promise one on 429: opt in
    served.hs.set_burst_limit(3, 1.5)
    sleep = RecordingSleep()
    conn = connect(served, rate_limit_reserve=0.0, sleep=sleep, request_attempts=1)  # run into the window
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


def test_a_429_is_waited_out_and_resent_by_the_client(served: Served, connect: Connect) -> None:
    served.hs.quirks.retry_after_header = True  # HubSpot does not promise one on 429: opt in
    served.hs.set_burst_limit(3, 1.5)
    sleep = RecordingSleep()
    conn = connect(served, rate_limit_reserve=0.0, sleep=sleep)
    state = FULL
    for _ in range(3):
        state = conn.read_page("contacts", state, 10, FIELDS).next_state
    page = conn.read_page("contacts", state, 10, FIELDS)
    assert len(page.records) == 10 and page.calls == 2
    calls = served.hs.calls.all()
    assert [c.status for c in calls] == [200, 200, 200, 429, 200]
    assert calls[-1].at - calls[-2].at >= 2.0, "resent before the Retry-After had passed"
    assert calls[-1].target == calls[-2].target  # the same page again
    assert sleep.pauses == [2.0]


@pytest.mark.parametrize(
    "rule",
    [
        {"server_error": 0.2, "server_error_status": 503},
        {"drop": 0.2},
        {"malformed": 0.2},
        {"timeout": 0.2, "timeout_s": 0.6},
        {"rate_limit": 0.1, "retry_after_s": 1},
    ],
    ids=["503", "drop", "malformed", "timeout", "429"],
)
def test_a_read_under_intermittent_faults_completes_exactly_once(
    served: Served, connect: Connect, rule: dict[str, object]
) -> None:
    undisturbed = read_all(connect(served), "contacts", FULL, page_size=10, fields=FIELDS)
    baseline = len(served.hs.calls.all())
    served.hs.calls.clear()
    _fault(served, **rule)
    sleep = RecordingSleep()
    conn = connect(served, read_timeout_s=0.3, sleep=sleep)
    res = read_all(conn, "contacts", FULL, page_size=10, fields=FIELDS)
    ids = [r["hs_object_id"] for r in res.records]
    assert len(ids) == len(set(ids)) == 250
    assert res.records == undisturbed.records
    assert conn.client.resends > 0, "the fault plan injected nothing: the test is vacuous"
    # Every call beyond the undisturbed read's is a resend of a failed one: nothing read twice. (A
    # timed-out request is logged when the sandbox gives up on it, up to timeout_s after the client.)
    expected = baseline + conn.client.resends
    deadline = time.monotonic() + 5
    while len(served.hs.calls.all()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(served.hs.calls.all()) == expected
    assert len(sleep.pauses) >= conn.client.resends


def test_a_batch_create_is_not_resent_after_a_transient_failure(served: Served, connect: Connect) -> None:
    served.hs.faults.set_plan(
        FaultPlan(rules=[FaultRule(endpoint="hs.batch.*", server_error=1.0, server_error_status=503)])
    )
    conn = connect(served, sleep=RecordingSleep(), request_attempts=3)
    served.hs.calls.clear()
    with pytest.raises(TransientError):
        conn.client.batch("contacts", "create", [{"properties": {"email": "x@example.com"}}])
    assert len(served.hs.calls.all()) == 1  # it may have been created: resending could duplicate it
    with pytest.raises(TransientError):
        conn.client.batch(
            "contacts", "upsert", [{"id": "x@example.com", "idProperty": "email", "properties": {}}]
        )
    assert len(served.hs.calls.all()) == 1 + 3  # an upsert by a unique property is safe to resend


def test_a_retry_after_longer_than_max_pause_raises_without_a_call(served: Served, connect: Connect) -> None:
    _fault(served, rate_limit=1.0, retry_after_s=7)
    conn = connect(served, max_pause_s=1.0)  # 7 s is more than one pause may be: no resend either
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


def test_clients_of_one_portal_share_the_burst_window(served: Served, connect: Connect) -> None:
    """Four syncs of one connection in one worker (four clients, one ``rate_limit_key``) keep the
    portal's burst window between them; none meets a 429."""
    limit, window = 20, 1.0
    served.hs.set_burst_limit(limit, window)
    key = f"conn-{uuid.uuid4().hex}"
    conns = [connect(served, rate_limit_key=key, sleep=RecordingSleep()) for _ in range(4)]
    conns[0].read_page("contacts", FULL, 1, FIELDS)  # the first answer's headers describe the window
    time.sleep(window)
    served.hs.calls.clear()
    results: list[int] = []

    def read(conn: HubSpotConnector) -> None:
        results.append(len(read_all(conn, "contacts", FULL, page_size=25, fields=FIELDS).records))

    threads = [threading.Thread(target=read, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [250] * len(conns)
    calls = served.hs.calls.all()
    assert [c.status for c in calls if c.status != 200] == [], "a client overran the shared window"
    times = sorted(c.at for c in calls)
    worst = max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))
    assert worst <= limit


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
    conn = connect(served, read_timeout_s=0.3, request_attempts=1)  # the mapping, without resends
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


@pytest.mark.parametrize(
    "body",
    [b"[" * 10_000 + b"]" * 10_000, b'{"results": [], "total": NaN}', b'{"x": -Infinity}', b"\xff\xfe{"],
    ids=["10k-deep", "nan", "infinity", "not-utf8"],
)
def test_a_vendor_body_that_is_not_json_reads_as_malformed_not_as_a_crash(body: bytes) -> None:
    assert hubspot_client._loads_quietly(body, default=None) is None
    assert hubspot_client._error_body(body) == {}
