"""Per-request resends (connectors/http.py ``send_with_retries`` in the Salesforce client): intermittent
vendor faults are invisible to the reader — every record exactly once, and every call beyond an
undisturbed read's is a resend of a failed one; a Retry-After is waited out before the resend; a
request that may have created something (a POST create) is never resent."""

from __future__ import annotations

import time
import uuid

import pytest

from connectors.salesforce import SalesforceConnector
from connectors.testing import read_all
from sandbox.faults import FaultPlan, FaultRule
from schemas.connector import ReadMode, StreamState, WriteMode
from schemas.errors import TransientError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import CountingTokens, Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]
FULL = StreamState(mode=ReadMode.FULL)


def _settled(org: Org, expected: int) -> int:
    """The sandbox's call count once it has logged ``expected`` calls (a timed-out request is logged
    when the sandbox gives up on it, after the client has moved on), or after 5 s."""
    deadline = time.monotonic() + 5
    while len(org.sb.calls.all()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(org.sb.calls.all())


@pytest.mark.parametrize(
    "rule",
    [
        {"server_error": 0.25, "server_error_status": 503, "retry_after_s": 0},
        {"server_error": 0.25, "server_error_status": 500, "retry_after_s": 0},
        {"drop": 0.25},
        {"malformed": 0.25},
        {"timeout": 0.25, "timeout_s": 1.5},
    ],
    ids=["503", "500", "drop", "malformed", "timeout"],
)
def test_a_paged_read_under_intermittent_faults_returns_every_record_once(
    org: Org, rule: dict[str, object]
) -> None:
    undisturbed = read_all(org.connector(), "Contact", FULL, page_size=25, fields=FIELDS)
    baseline = len(org.sb.calls.all())
    org.sb.calls.clear()
    org.sb.faults.set_plan(FaultPlan(seed=3, rules=[FaultRule(endpoint="sf.query*", **rule)]))
    conn = org.connector(timeout_s=0.5)  # the harness's sleep is a no-op: resends go out at once
    res = read_all(conn, "Contact", FULL, page_size=25, fields=FIELDS)
    ids = [r["Id"] for r in res.records]
    assert len(ids) == len(set(ids)) == len(undisturbed.records)
    assert res.records == undisturbed.records
    resends = conn._client.resends
    assert resends > 0, "the fault plan injected nothing: the test is vacuous"
    assert _settled(org, baseline + resends) == baseline + resends


def test_a_retry_after_is_waited_out_before_the_resend(org: Org) -> None:
    org.sb.faults.set_plan(
        FaultPlan(seed=5, rules=[FaultRule(endpoint="sf.query*", rate_limit=0.3, retry_after_s=1)])
    )
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    conn = SalesforceConnector(org.config(), CountingTokens(org.sb), sleep=sleep)
    try:
        res = read_all(conn, "Contact", FULL, page_size=50, fields=FIELDS)
    finally:
        conn.close()
    assert len({r["Id"] for r in res.records}) == len(res.records) > 0
    calls = [c for c in org.sb.calls.all() if c.endpoint.startswith("sf.query")]
    limited = [i for i, c in enumerate(calls) if c.status == 403]
    assert limited, "no rate limit was injected: the test is vacuous"
    for i in limited:
        assert calls[i + 1].target == calls[i].target, "the resend asked for something else"
        assert calls[i + 1].at - calls[i].at >= 1.0, "resent before its Retry-After"
    assert pauses.count(1.0) == len(limited)


def test_a_create_is_never_resent_but_an_upsert_by_external_id_is(org: Org) -> None:
    conn = org.connector(request_attempts=3)
    org.sb.faults.set_plan(
        FaultPlan(
            rules=[
                FaultRule(
                    endpoint="sf.collections*", server_error=1.0, server_error_status=503, retry_after_s=0
                )
            ]
        )
    )
    org.sb.calls.clear()
    tag = uuid.uuid4().hex[:12]
    with pytest.raises(TransientError):
        conn.write_batch(
            "Contact", [required("Contact", tag)], WriteMode.CREATE, external_id="External_Id__c"
        )
    assert org.sb.calls.counts() == {"sf.collections": 1}  # it may have been created: no resend
    with pytest.raises(TransientError):
        conn.write_batch(
            "Contact", [required("Contact", tag)], WriteMode.UPSERT, external_id="External_Id__c"
        )
    assert org.sb.calls.counts() == {"sf.collections": 1, "sf.collections_upsert": 3}
