"""Deletes that never appear as deletes (issue 13 item 4, Salesforce): merges, a recycle bin emptied
or purged after 15 days, and the id listing a reconciliation compares with the destination.

Real connector, simple-salesforce over HTTPS to the sandbox, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE set.
"""

from __future__ import annotations

import pathlib
import time
import uuid

import pytest

from connectors.salesforce import SalesforceConnector
from connectors.salesforce.deletelog import PURGED, TOO_OLD
from connectors.testing import read_all
from schemas.connector import IdPage, StreamState
from schemas.errors import ConfigError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import SYSTEM_BUNDLE, CountingTokens, Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]
DAY_S = 86_400


@pytest.fixture(autouse=True)
def _system_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if pathlib.Path(SYSTEM_BUNDLE).exists():
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
        monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)


def _fresh(org: Org, conn: SalesforceConnector) -> StreamState:
    """A state whose last look at the delete log is now: initial read, a change, one more run."""
    state = read_all(conn, "Contact", StreamState(), page_size=500, fields=FIELDS).final_state
    org.sb.create_record("Contact", required("Contact", uuid.uuid4().hex[:12]))
    return read_all(conn, "Contact", state, page_size=500, fields=FIELDS).final_state


def test_merged_losers_arrive_as_deletes_naming_their_master(org: Org) -> None:
    conn = org.connector()
    state = _fresh(org, conn)
    master, *losers = sorted(r.id for r in org.sb.store.dump("Contact", include_deleted=False))[:3]
    org.sb.merge_records("Contact", master, losers, {"LastName": "Merged"})
    org.sb.calls.clear()
    page = conn.read_page("Contact", state, 100, FIELDS)
    assert not page.has_more and page.reconcile is None
    assert sorted(page.deleted_ids) == sorted(losers)
    assert page.merged_into == dict.fromkeys(losers, master)
    assert [r["Id"] for r in page.records] == [master] and page.records[0]["LastName"] == "Merged"
    assert org.sb.calls.counts() == {"sf.deleted": 1, "sf.queryAll": 1}
    assert not set(losers) & {r.id for r in org.sb.store.dump("Contact", include_deleted=False)}


def test_an_emptied_recycle_bin_is_detected_and_the_id_listing_finds_the_deletes(org: Org) -> None:
    conn = org.connector()
    state = _fresh(org, conn)
    victims = sorted(r.id for r in org.sb.store.dump("Contact", include_deleted=False))[:4]
    for rid in victims:
        org.sb.delete_record("Contact", rid)
    assert org.sb.empty_recycle_bin("Contact") == 4  # gone before the next read
    first = conn.read_page("Contact", state, 100, FIELDS)
    assert first.reconcile == PURGED and first.deleted_ids == []  # no delete to read: the bin says so
    rest = read_all(conn, "Contact", first.next_state, page_size=100, fields=FIELDS)
    assert rest.deleted_ids == []
    again = conn.read_page("Contact", rest.final_state, 100, FIELDS)
    assert again.reconcile is None  # reported once: the next look starts after the purge
    # The reconciliation's listing: every live id, exactly once, without the purged ones.
    org.sb.calls.clear()
    ids, pages = _all_ids(conn, page_size=120)
    live = {r.id for r in org.sb.store.dump("Contact", include_deleted=False)}
    assert len(ids) == len(set(ids)) and set(ids) == live and not set(victims) & set(ids)
    # First page counts (no LIMIT), then keyset pages: ceil(297 / 120) = 3 pages, one query each.
    assert pages == 3 and org.sb.calls.counts() == {"sf.query": 3}


def test_a_delete_older_than_the_bins_15_days_is_detected(org: Org) -> None:
    now = [time.time()]
    conn = SalesforceConnector(
        org.config(), CountingTokens(org.sb), clock=lambda: now[0], sleep=lambda _s: None
    )
    clock = org.sb.store.clock
    clock.freeze(int(now[0] * 1000))
    state = _fresh(org, conn)
    victim = sorted(r.id for r in org.sb.store.dump("Contact", include_deleted=False))[0]
    org.sb.delete_record("Contact", victim)
    now[0] += 16 * DAY_S  # the sync stood still for 16 days: the bin purged the delete meanwhile
    clock.freeze(int(now[0] * 1000))
    res = conn.read_page("Contact", state, 500, FIELDS)
    assert res.reconcile == TOO_OLD and victim not in res.deleted_ids
    assert org.sb.store.get("Contact", victim, include_deleted=True) is None
    clock.unfreeze()


def _all_ids(conn: SalesforceConnector, *, page_size: int) -> tuple[list[str], int]:
    state, ids, pages = StreamState(), [], 0
    while True:
        page: IdPage = conn.list_ids("Contact", state, page_size)
        ids += page.ids
        pages += 1
        state = page.next_state
        if not page.has_more:
            return ids, pages


def test_the_id_listing_goes_through_one_bulk_job_for_large_objects_and_deletes_it(org: Org) -> None:
    conn = org.connector(bulk_threshold=100)
    org.sb.calls.clear()
    ids, pages = _all_ids(conn, page_size=100)
    assert len(ids) == len(set(ids)) == 300 and set(ids) == {r.id for r in org.sb.store.dump("Contact")}
    calls = org.sb.calls.counts()
    # The counting first page over REST, then one job (create, 2 polls, 2 result sets, delete).
    assert pages == 3 and calls == {
        "sf.query": 1,
        "sf.bulk2.jobs": 1,
        "sf.bulk2.job": 3,
        "sf.bulk2.results": 2,
    }
    assert org.sb.jobs.open_jobs() == 0


def test_the_contract_default_says_listing_is_not_supported() -> None:
    from types import SimpleNamespace

    from connectors.base import Connector

    with pytest.raises(ConfigError) as err:
        Connector.list_ids(SimpleNamespace(name="bare"), "x", StreamState(), 10)  # type: ignore[arg-type]
    assert err.value.code == "LIST_IDS_UNSUPPORTED"
