"""Bulk API 2.0 limits, the real delete endpoint and short query batches (issue 13 items 5, 6, 7 —
Salesforce part), through the real connector over HTTPS with REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE set."""

from __future__ import annotations

import math
import pathlib
import uuid
from urllib.parse import unquote_plus

import pytest

from connectors.testing import read_all
from schemas.connector import OutcomeStatus, ReadMode, Record, StreamState, WriteMode
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import SYSTEM_BUNDLE, Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]
FULL = StreamState(mode=ReadMode.FULL)


@pytest.fixture(autouse=True)
def _system_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if pathlib.Path(SYSTEM_BUNDLE).exists():
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
        monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)


def _ids(records: list[Record]) -> list[str]:
    return [str(r["Id"]) for r in records]


def _reference(org: Org) -> list[str]:
    return _ids(read_all(org.connector(), "Contact", FULL, page_size=2000, fields=FIELDS).records)


# -- Bulk API 2.0: refused jobs fall back to REST --------------------------------------------------


@pytest.mark.parametrize("refusal", ["daily_limit", "unsupported_object", "bulk_disabled"])
def test_a_refused_bulk_job_falls_back_to_rest_and_loses_nothing(org: Org, refusal: str) -> None:
    expected = _reference(org)
    if refusal == "daily_limit":
        org.sb.jobs.daily_job_limit = 0  # 10,000 query jobs in 24 h already made
    elif refusal == "unsupported_object":
        org.sb.jobs.unsupported_objects.add("Contact")
    else:
        org.sb.jobs.enabled = False
    org.sb.calls.clear()
    res = read_all(org.connector(bulk_threshold=0), "Contact", FULL, page_size=120, fields=FIELDS)
    assert _ids(res.records) == expected  # same rows, same order, once each
    calls = org.sb.calls.counts()
    # One refused job create, then REST keyset pages (300 / 120 = 3); no second job.
    assert calls == {"sf.describe": 1, "sf.bulk2.jobs": 1, "sf.query": 3}
    assert res.states[1].extra["path"] == "rest"


def test_an_ordered_job_that_times_out_is_followed_by_one_without_order_by(org: Org) -> None:
    expected = set(_reference(org))
    org.sb.jobs.order_by_timeout_rows = 100  # this org's Contact is "large" for an un-chunked query
    org.sb.calls.clear()
    res = read_all(org.connector(bulk_threshold=0), "Contact", FULL, page_size=2000, fields=FIELDS)
    assert len(res.records) == len(set(_ids(res.records))) == 300 and set(_ids(res.records)) == expected
    creates = [c for c in org.sb.calls.all() if c.endpoint == "sf.bulk2.jobs"]
    assert len(creates) == 2  # the ordered job (Failed: QUERY_TIMEOUT) and one without ORDER BY
    assert org.sb.jobs.open_jobs() == 0 and org.sb.jobs.deleted == 2  # both deleted (retention)


def test_a_read_counted_above_the_order_by_limit_runs_its_job_without_order_by(org: Org) -> None:
    rest = read_all(org.connector(), "Contact", FULL, page_size=100, fields=FIELDS)
    org.sb.jobs.order_by_timeout_rows = 150  # an ORDER BY job here would fail
    conn = org.connector(bulk_threshold=50, bulk_order_by_max=100)
    org.sb.calls.clear()
    bulk = read_all(conn, "Contact", FULL, page_size=100, fields=FIELDS)
    assert sorted(_ids(bulk.records)) == sorted(_ids(rest.records)) and len(bulk.records) == 300
    assert bulk.states[1].extra["path"] == "bulk_unordered"
    calls = org.sb.calls.counts()
    assert calls["sf.bulk2.jobs"] == 1 and calls["sf.bulk2.results"] == 2  # 200 rows in sets of 100
    # The cursor ends where REST's does: at the largest keyset handed out, whatever the row order.
    assert (bulk.final_state.cursor, bulk.final_state.tie_break) == (
        rest.final_state.cursor,
        rest.final_state.tie_break,
    )
    assert org.sb.jobs.open_jobs() == 0


def test_a_finished_bulk_read_leaves_no_job_behind(org: Org) -> None:
    read_all(org.connector(bulk_threshold=0), "Contact", FULL, page_size=2000, fields=FIELDS)
    assert org.sb.jobs.open_jobs() == 0 and org.sb.jobs.deleted == 1


# -- deletes through sObject Collections ------------------------------------------------------------


def test_deletes_go_200_ids_a_call_with_one_outcome_each(org: Org) -> None:
    conn = org.connector()
    made = conn.write_batch(
        "Lead",
        [required("Lead", uuid.uuid4().hex[:12]) for _ in range(300)],
        WriteMode.UPSERT,
        external_id="External_Id__c",
    )
    ids = [str(o.id) for o in made.outcomes] + [str(r.id) for r in org.sb.store.dump("Lead")][:150]
    batch: list[Record] = [{"Id": rid} for rid in ids]
    org.sb.calls.clear()
    res = conn.write_batch("Lead", batch, WriteMode.DELETE, external_id="External_Id__c")
    assert [o.status for o in res.outcomes] == [OutcomeStatus.DELETED] * 450
    assert [o.id for o in res.outcomes] == ids
    assert res.calls == math.ceil(450 / 200) and org.sb.calls.counts() == {"sf.collections": 3}
    deletes = [unquote_plus(c.target) for c in org.sb.calls.all()]
    assert all("allOrNone=false" in t and t.count(",") <= 199 for t in deletes)
    assert not {r.id for r in org.sb.store.dump("Lead", include_deleted=False)} & set(ids)
    again = conn.write_batch("Lead", batch[:10], WriteMode.DELETE, external_id="External_Id__c")
    assert [o.status for o in again.outcomes] == [OutcomeStatus.DELETED] * 10  # already in the bin


# -- short query batches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("custom_long_text", "batch"),
    [(0, 2000), (1, 1000), (2, 200)],
    ids=["no-long-text", "one-long-text", "two-custom-long-text"],
)
def test_pages_of_short_vendor_batches_are_filled_without_loss(
    org: Org, custom_long_text: int, batch: int
) -> None:
    org.sb.seed({"Contact": 2200}, seed=8)  # 2,500 contacts
    fields = ["LastName"]
    for i in range(custom_long_text):
        name = f"Notes_{i}__c"
        org.sb.add_field(
            "Contact",
            {"name": name, "type": "textarea", "length": 32768, "custom": True, "filterable": False},
        )
        fields.append(name)
    conn = org.connector()
    conn.read_page("Contact", FULL, 1, fields)  # describe first, so the counts below are the reads'
    org.sb.calls.clear()
    res = read_all(conn, "Contact", FULL, page_size=2000, fields=fields)
    assert len(res.records) == len(set(_ids(res.records))) == 2500
    calls = org.sb.calls.counts()
    # Two pages of at most 2,000 records; each is as many vendor batches as its rows need.
    assert calls["sf.query"] == 2
    assert calls.get("sf.query_more", 0) == math.ceil(2000 / batch) - 1 + math.ceil(500 / batch) - 1
