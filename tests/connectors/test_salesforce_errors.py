"""Vendor failures become typed errors with a retry meaning — never a crash, a leak or a lost record."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.salesforce import SalesforceConnector
from connectors.testing import read_all
from sandbox.faults import FaultPlan, FaultRule
from schemas.connector import Page, ReadMode, StreamState
from schemas.errors import AuthError, CrmhubError, ErrorKind, RateLimited, TransientError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import CountingTokens, Org

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]


def _raises(kind: type[CrmhubError], fn: Callable[[], object], *secrets: str) -> CrmhubError:
    """Call ``fn`` expecting ``kind``; the error must carry no vendor exception and no secret."""
    with pytest.raises(kind) as info:
        fn()
    err = info.value
    assert err.__cause__ is None and err.__context__ is None, "vendor exception attached"
    for s in secrets:
        assert s not in str(err) and s not in repr(err.args)
    return err


# -- the daily API budget ---------------------------------------------------------------------------


def test_budget_share_stops_cleanly_and_the_same_state_resumes_with_nothing_lost(org: Org) -> None:
    org.sb.set_daily_limit(60, used=0)
    conn = org.connector(daily_quota_share=0.5, quota_pause_s=900)
    state = StreamState(mode=ReadMode.INCREMENTAL)
    got: list[str] = []
    stopped: RateLimited | None = None
    for _ in range(100):
        try:
            page = conn.read_page("Contact", state, 7, FIELDS)
        except RateLimited as err:
            stopped = err
            break
        got += [str(r["Id"]) for r in page.records]
        state = page.next_state
    assert stopped is not None, "the budget never stopped the read"
    assert (stopped.retry_after, stopped.code, stopped.kind) == (
        900,
        "API_BUDGET_USED",
        ErrorKind.RATE_LIMITED,
    )
    usage = conn.api_usage
    assert usage is not None and 30 <= usage[0] <= 32 and usage[1] == 60
    assert all(c.status != 403 for c in org.sb.calls.all()), "the org's own limit was hit"
    assert len(got) < 300
    # Later (the allocation rolled over or was raised), the caller re-calls with the same state.
    org.sb.set_daily_limit(100_000, used=0)
    rest = read_all(conn, "Contact", state, page_size=7, fields=FIELDS)
    got += [str(r["Id"]) for r in rest.records]
    assert len(got) == len(set(got)) == 300


def test_check_reports_usage_and_an_exhausted_budget(org: Org) -> None:
    conn = org.connector(daily_quota_share=0.5)
    result = conn.check()
    assert result.ok and result.api_usage is not None and result.api_usage.endswith("/100000")
    org.sb.set_daily_limit(100, used=70)
    result = conn.check()
    assert not result.ok and result.api_usage == "71/100"


def test_org_request_limit_exceeded_is_a_pause_not_a_failure(org: Org) -> None:
    token = CountingTokens(org.sb)
    conn = org.connector(token, quota_pause_s=1800)
    org.sb.set_daily_limit(10, used=10)
    err = _raises(RateLimited, lambda: conn.read_page("Contact", StreamState(), 7, FIELDS), token.token)
    assert isinstance(err, RateLimited)
    assert (err.code, err.retry_after) == ("REQUEST_LIMIT_EXCEEDED", 1800)


def test_concurrent_request_limit_uses_retry_after(org: Org) -> None:
    conn = org.connector(request_attempts=1)  # the mapping, without resends (test_salesforce_retries)
    conn.describe("Contact")
    org.sb.faults.set_plan(
        FaultPlan(rules=[FaultRule(endpoint="sf.query*", rate_limit=1.0, retry_after_s=2)])
    )
    err = _raises(RateLimited, lambda: conn.read_page("Contact", StreamState(), 7, FIELDS))
    assert isinstance(err, RateLimited)
    assert (err.code, err.retry_after) == ("REQUEST_LIMIT_EXCEEDED", 2)


# -- server errors, broken bodies, broken connections ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "kind", "code", "retry_after"),
    [
        (
            FaultRule(endpoint="sf.query*", server_error=1.0, retry_after_s=3),
            RateLimited,
            "SERVER_UNAVAILABLE",
            3,
        ),
        (
            FaultRule(endpoint="sf.query*", server_error=1.0, retry_after_s=0),
            TransientError,
            "SERVER_UNAVAILABLE",
            None,
        ),
        (
            FaultRule(endpoint="sf.query*", server_error=1.0, server_error_status=500, retry_after_s=0),
            TransientError,
            "UNKNOWN_EXCEPTION",
            None,
        ),
        (FaultRule(endpoint="sf.query*", malformed=1.0), TransientError, "MALFORMED_RESPONSE", None),
        (FaultRule(endpoint="sf.query*", drop=1.0), TransientError, "CONNECTION", None),
        (FaultRule(endpoint="sf.query*", timeout=1.0, timeout_s=3), TransientError, "TIMEOUT", None),
    ],
    ids=["503-retry-after", "503", "500", "malformed", "drop", "timeout"],
)
def test_vendor_faults_are_typed_and_the_same_state_reads_the_page_afterwards(
    org: Org, rule: FaultRule, kind: type[CrmhubError], code: str, retry_after: float | None
) -> None:
    tokens = CountingTokens(org.sb)
    conn = org.connector(tokens, timeout_s=1.0, request_attempts=1)  # the mapping, without resends
    state = StreamState(mode=ReadMode.INCREMENTAL)
    expected = conn.read_page("Contact", state, 7, FIELDS)
    org.sb.faults.set_plan(FaultPlan(rules=[rule]))
    err = _raises(kind, lambda: conn.read_page("Contact", state, 7, FIELDS), tokens.token)
    assert err.code == code and err.kind.retryable
    if retry_after is not None:
        assert isinstance(err, RateLimited) and err.retry_after == retry_after
    org.sb.faults.clear()
    assert conn.read_page("Contact", state, 7, FIELDS).records == expected.records


def test_a_malformed_bulk_results_body_is_transient(org: Org) -> None:
    conn = org.connector(bulk_threshold=0, request_attempts=1)
    org.sb.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="sf.bulk2.job", malformed=1.0)]))
    err = _raises(
        TransientError, lambda: conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 7, FIELDS)
    )
    assert err.code == "MALFORMED_RESPONSE"


# -- tokens ---------------------------------------------------------------------------------------


def _pages(conn: SalesforceConnector, n: int) -> list[Page]:
    pages, state = [], StreamState(mode=ReadMode.FULL)
    for _ in range(n):
        page = conn.read_page("Contact", state, 7, FIELDS)
        pages.append(page)
        state = page.next_state
    return pages


def test_401_mid_read_refreshes_exactly_once_and_rereads_the_same_page(org: Org) -> None:
    reference = _pages(org.connector(), 3)
    tokens = CountingTokens(org.sb)
    conn = org.connector(tokens)
    first = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 7, FIELDS)
    old = tokens.token
    org.sb.oauth.expire_all_access_tokens()
    second = conn.read_page("Contact", first.next_state, 7, FIELDS)
    assert tokens.refreshes == 1 and tokens.rejected == [old]
    assert second.records == reference[1].records
    assert second.calls == 2  # the refused query and the same query again
    third = conn.read_page("Contact", second.next_state, 7, FIELDS)
    assert third.records == reference[2].records and tokens.refreshes == 1


def test_401_between_batches_of_one_page_repeats_only_that_request(org: Org) -> None:
    org.sb.seed({"Contact": 2200}, seed=6)  # 2,500 contacts: one page of 2,500 = two vendor batches
    tokens = CountingTokens(org.sb)
    conn = org.connector(tokens)
    conn.describe("Contact")
    org.sb.calls.clear()
    org.sb.oauth.expire_after_calls = 2  # calls per token: describe, query; the query_more meets a dead token
    try:
        page = conn.read_page("Contact", StreamState(), 2500, FIELDS)
    finally:
        org.sb.oauth.expire_after_calls = None
    assert tokens.refreshes == 1
    assert org.sb.calls.counts() == {"sf.query_more": 2, "sf.queryAll": 1}
    assert len(page.records) == len({r["Id"] for r in page.records}) == 2500


def test_a_token_that_stays_refused_is_an_auth_error_after_one_refresh(org: Org) -> None:
    class Hopeless(CountingTokens):
        def refresh(self, rejected: str) -> str:
            self.refreshes += 1
            return "00Dxx0000000000!AQ4AQFakeTokenThatNeverWorks"

    tokens = Hopeless(org.sb)
    conn = org.connector(tokens)
    org.sb.oauth.expire_all_access_tokens()
    err = _raises(
        AuthError,
        lambda: conn.read_page("Contact", StreamState(), 7, FIELDS),
        tokens.token,
        "FakeTokenThatNeverWorks",
    )
    assert err.code == "INVALID_SESSION_ID" and not err.kind.retryable
    assert tokens.refreshes == 1
    assert not conn.check().ok


def test_an_unknown_object_is_a_config_error(org: Org) -> None:
    conn = org.connector()
    err = _raises(CrmhubError, lambda: conn.read_page("Campaign", StreamState(), 7, ["Name"]))
    assert err.kind is ErrorKind.CONFIG and err.code == "NOT_FOUND"
