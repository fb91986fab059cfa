"""Reads beyond the contract: the documented 2,000-record batch at scale, Bulk API 2.0 = REST, resumes,
compound fields, schema drift, the incremental lag window, TLS pinning and configuration."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator
from urllib.parse import unquote_plus

import pytest
from pydantic import ValidationError

from connectors.salesforce import SalesforceConfig, SalesforceConnector
from connectors.salesforce.connector import _SharedDescribes
from connectors.testing import read_all
from sandbox.fake import BASE_EPOCH_MS
from sandbox.salesforce import SalesforceSandbox
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import FIELDS, SYSTEM_BUNDLE, CountingTokens, Org, serve

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

BIG = 5_500


@pytest.fixture(scope="module")
def big_org(sf_ca: SandboxCA) -> Iterator[Org]:
    """5,500 contacts (three REST batches of 2,000), read-only for this module's tests."""
    sb = SalesforceSandbox()
    sb.seed({"Account": 50, "Contact": BIG}, seed=9)
    yield from serve(sb, sf_ca)


def _ids(records: list[dict[str, object]]) -> list[str]:
    return [str(r["Id"]) for r in records]


# -- scale and paging ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [ReadMode.INCREMENTAL, ReadMode.FULL])
def test_every_seeded_contact_arrives_exactly_once_in_2000_record_pages(big_org: Org, mode: ReadMode) -> None:
    conn = big_org.connector()
    seeded = {r.id for r in big_org.sb.store.dump("Contact")}
    res = read_all(conn, "Contact", StreamState(mode=mode), page_size=2000, fields=FIELDS["Contact"])
    got = _ids(res.records)
    assert len(got) == len(set(got)) == BIG
    assert set(got) == seeded
    # 2,000 is not a multiple of the seed's tie groups of 3: both page boundaries fall inside a tie.
    stamps = [r["SystemModstamp"] for r in res.records]
    assert stamps[1999] == stamps[2000] or stamps[1998] == stamps[1999]
    assert res.pages == 3
    keys = [(s.cursor or "", s.tie_break or "") for s in res.states]
    assert keys == sorted(keys)


def test_a_full_read_is_counted_by_its_first_page_not_by_a_count_query(big_org: Org) -> None:
    big_org.sb.calls.clear()
    res = read_all(
        big_org.connector(), "Contact", StreamState(mode=ReadMode.FULL), page_size=2000, fields=["LastName"]
    )
    assert len(res.records) == BIG and res.pages == 3
    queries = [c.target for c in big_org.sb.calls.all() if c.endpoint == "sf.query"]
    assert len(queries) == 3 and not any("COUNT" in unquote_plus(t).upper() for t in queries)
    assert "LIMIT" not in unquote_plus(queries[0]) and all(
        "LIMIT 2000" in unquote_plus(t) for t in queries[1:]
    )
    assert big_org.sb.calls.counts() == {"sf.describe": 1, "sf.query": 3}


def test_a_page_larger_than_one_vendor_batch_follows_next_records_url(big_org: Org) -> None:
    conn = big_org.connector()
    # The first page pays for describe; its query (no LIMIT) also counts the records, REST or Bulk.
    first = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 10, ["LastName"])
    assert first.calls == 2 and len(first.records) == 10 and first.has_more
    big_org.sb.calls.clear()
    page = conn.read_page("Contact", first.next_state, 5000, ["LastName"])
    assert len(page.records) == len(set(_ids(page.records))) == 5000
    assert page.calls == 3  # query (2,000) + query_more twice, by the server-relative nextRecordsUrl
    assert big_org.sb.calls.counts() == {"sf.query": 1, "sf.query_more": 2}
    rest = conn.read_page("Contact", page.next_state, 5000, ["LastName"])
    assert len(rest.records) == BIG - 5010 and not rest.has_more
    assert len(set(_ids(first.records + page.records + rest.records))) == BIG


def test_an_expired_query_locator_mid_page_ends_the_page_early_and_loses_nothing(sf_ca: SandboxCA) -> None:
    sb = SalesforceSandbox(cursor_ttl_s=0)  # every query locator is stale by the time it is used
    sb.seed({"Contact": 2500}, seed=4)
    for org in serve(sb, sf_ca):
        conn = org.connector()
        first = conn.read_page("Contact", StreamState(), 2500, ["LastName"])
        assert len(first.records) == 2000 and first.has_more  # the query_more met INVALID_QUERY_LOCATOR
        rest = read_all(conn, "Contact", first.next_state, page_size=2500, fields=["LastName"])
        ids = _ids(first.records + rest.records)
        assert len(ids) == len(set(ids)) == 2500


def test_incremental_without_deletes_uses_query(org: Org) -> None:
    conn = org.connector()
    victim = sorted(r.id for r in org.sb.store.dump("Contact"))[0]
    org.sb.delete_record("Contact", victim)
    org.sb.calls.clear()
    res = read_all(conn, "Contact", StreamState(include_deleted=False), page_size=100, fields=["LastName"])
    assert res.deleted_ids == [] and victim not in _ids(res.records) and len(res.records) == 299
    assert "sf.queryAll" not in org.sb.calls.counts()


# -- Bulk API 2.0 ---------------------------------------------------------------------------------


def test_bulk_path_returns_exactly_what_the_rest_path_returns(big_org: Org) -> None:
    fields = FIELDS["Contact"]
    rest = read_all(
        big_org.connector(), "Contact", StreamState(mode=ReadMode.FULL), page_size=2000, fields=fields
    )
    big_org.sb.calls.clear()
    bulk_conn = big_org.connector(bulk_threshold=5_000)
    bulk = read_all(bulk_conn, "Contact", StreamState(mode=ReadMode.FULL), page_size=2000, fields=fields)
    calls = big_org.sb.calls.counts()
    # The first page over REST (its query counts 5,500 > 5,000), the other 3,500 in two result sets.
    assert (
        calls.get("sf.query") == 1 and calls.get("sf.bulk2.jobs") == 1 and calls.get("sf.bulk2.results") == 2
    )
    assert bulk.pages == rest.pages == 3
    assert "sf.query_more" not in calls
    assert bulk.records == rest.records  # same order, same flat shape, same typed values
    assert bulk.final_state.cursor == rest.final_state.cursor
    assert bulk.final_state.tie_break == rest.final_state.tie_break
    assert bulk.states[1].extra["path"] == "bulk"  # chosen by the first page's count
    assert set(bulk.states[1].extra) == {"path", "covered"}  # covered: when the full read began
    assert bulk.states[2].extra["path"] == "bulk" and "bulk_job" in bulk.states[2].extra


def test_bulk_read_resumes_mid_job_from_the_state_alone(big_org: Org) -> None:
    fields = ["LastName", "Email"]
    first = big_org.connector(bulk_threshold=0)
    state = StreamState(mode=ReadMode.FULL)
    seen: list[str] = []
    for _ in range(2):
        page = first.read_page("Contact", state, 1000, fields)
        seen += _ids(page.records)
        state = page.next_state
    assert state.page_token is not None and "bulk_job" in state.extra
    # A new worker (new connector, new token) carries on from the serialized state.
    resumed = StreamState.model_validate_json(state.model_dump_json())
    big_org.sb.calls.clear()
    rest = read_all(big_org.connector(bulk_threshold=0), "Contact", resumed, page_size=1000, fields=fields)
    assert "sf.bulk2.jobs" not in big_org.sb.calls.counts()  # no new job: same job, next locator
    seen += _ids(rest.records)
    assert len(seen) == len(set(seen)) == BIG


@pytest.mark.parametrize(
    "tamper",
    [
        {"extra": {"path": "bulk", "bulk_job": "750000000000999AAA", "bulk_ready": "1"}},  # job gone: 404
        {"page_token": "not a locator!"},  # refused locally
    ],
)
def test_a_lost_bulk_job_continues_over_rest_from_the_keyset(big_org: Org, tamper: dict[str, object]) -> None:
    fields = ["LastName"]
    conn = big_org.connector(bulk_threshold=0)
    page = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 1500, fields)
    seen = _ids(page.records)
    broken = page.next_state.model_copy(update=tamper)
    rest = read_all(conn, "Contact", broken, page_size=2000, fields=fields)
    assert rest.states[1].extra["path"] == "rest"
    seen += _ids(rest.records)
    assert len(seen) == len(set(seen)) == BIG


# -- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1_000_000, 0], ids=["rest", "bulk"])
def test_compound_fields_arrive_as_their_components(org: Org, threshold: int) -> None:
    conn = org.connector(bulk_threshold=threshold)
    page = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 50, ["MailingAddress", "LastName"])
    rec = page.records[0]
    assert "MailingAddress" not in rec
    assert {
        "MailingStreet",
        "MailingCity",
        "MailingCountry",
        "MailingLatitude",
        "MailingGeocodeAccuracy",
    } <= set(rec)
    row = org.sb.store.get("Contact", str(rec["Id"]))
    assert row is not None
    assert (rec["MailingCity"], rec["MailingCountry"]) == (
        row.data["MailingCity"],
        row.data["MailingCountry"],
    )
    lead = conn.read_page("Lead", StreamState(mode=ReadMode.FULL), 5, ["Address"]).records[0]
    assert {"Street", "City", "PostalCode", "Country"} <= set(lead) and "Address" not in lead


def test_discovery_and_describe_flags(org: Org) -> None:
    conn = org.connector()
    streams = {s.name: s for s in conn.streams()}
    assert {"Contact", "Account", "Lead"} <= set(streams)
    assert (streams["Contact"].primary_key, streams["Contact"].cursor_field) == ("Id", "SystemModstamp")
    fields = {f.name: f for f in conn.describe("Contact").fields}
    assert fields["External_Id__c"].external_id and fields["External_Id__c"].unique
    assert fields["MailingAddress"].is_compound and not fields["MailingAddress"].writable
    assert fields["MailingCity"].compound == "MailingAddress" and fields["MailingCity"].writable
    assert not fields["Id"].writable and not fields["Id"].nullable
    assert fields["LastName"].compound == "Name" and not fields["LastName"].nullable


# -- schema drift ---------------------------------------------------------------------------------


def test_a_field_dropped_mid_sync_is_dropped_from_queries_without_a_crash(org: Org) -> None:
    conn = org.connector()
    fields = ["LastName", "Lead_Score__c"]
    first = conn.read_page("Contact", StreamState(), 100, fields)
    assert all("Lead_Score__c" in r for r in first.records)
    org.sb.drop_field("Contact", "Lead_Score__c")
    second = conn.read_page("Contact", first.next_state, 100, fields)  # INVALID_FIELD → describe → retry
    assert second.records and all("Lead_Score__c" not in r for r in second.records)
    assert second.calls == 3  # failed query, describe, query again
    rest = read_all(conn, "Contact", second.next_state, page_size=100, fields=fields)
    ids = _ids(first.records + second.records + rest.records)
    assert len(ids) == len(set(ids)) == 300
    drift = conn.read_drift("Contact")
    assert drift.removed == ("Lead_Score__c",) and not drift.added


class _ConnectionTokens(CountingTokens):
    """Tokens of one stored connection (as :class:`connectors.oauth.DbTokenSource` carries its id)."""

    def __init__(self, sb: SalesforceSandbox, connection_id: str) -> None:
        super().__init__(sb)
        self.connection_id = connection_id


def test_the_connectors_of_one_connection_share_describes_between_reads(org: Org) -> None:
    # One connector per activity: only the first describes for its reads.
    org.connector(_ConnectionTokens(org.sb, "conn-a")).read_page("Contact", StreamState(), 50, ["LastName"])
    org.sb.calls.clear()
    second = org.connector(_ConnectionTokens(org.sb, "conn-a"))
    assert len(second.read_page("Contact", StreamState(), 50, ["LastName"]).records) == 50
    assert org.sb.calls.counts() == {"sf.queryAll": 1}  # incremental: deletes too
    # Another connection (another user: field-level security may differ), a token source without a
    # connection id, and a describe older than describe_ttl_s are not shared.
    for conn in (
        org.connector(_ConnectionTokens(org.sb, "conn-b")),
        org.connector(),
        org.connector(_ConnectionTokens(org.sb, "conn-a"), describe_ttl_s=0),
    ):
        org.sb.calls.clear()
        conn.read_page("Contact", StreamState(), 50, ["LastName"])
        assert org.sb.calls.counts() == {"sf.describe": 1, "sf.queryAll": 1}
    # describe() (the plan's contract, the pull's drift check) always asks the org.
    org.sb.calls.clear()
    assert "LastName" in second.describe("Contact").names()
    assert org.sb.calls.counts() == {"sf.describe": 1}


def test_the_shared_describes_are_bounded_and_never_replaced_by_an_older_one() -> None:
    shared = _SharedDescribes(max_entries=2)
    one, two, three = ([{"name": n, "type": "string"}] for n in ("A", "B", "C"))
    shared.put(("c", "Contact"), 10.0, one)
    shared.put(("c", "Account"), 11.0, two)
    shared.put(("c", "Contact"), 9.0, three)  # described before the one kept: ignored
    assert shared.get(("c", "Contact"), math.inf) == (10.0, one)
    shared.put(("c", "Lead"), 12.0, three)  # the oldest entry goes
    assert shared.get(("c", "Contact"), math.inf) is None
    assert shared.get(("c", "Account"), math.inf) == (11.0, two)
    assert shared.get(("c", "Lead"), 0.0) is None  # older than the caller's max age


def test_a_shared_describe_that_went_stale_is_renewed_by_the_read_that_meets_it(org: Org) -> None:
    fields = ["LastName", "Lead_Score__c"]
    first = org.connector(_ConnectionTokens(org.sb, "conn-a"))
    page = first.read_page("Contact", StreamState(), 100, fields)
    org.sb.drop_field("Contact", "Lead_Score__c")
    second = org.connector(_ConnectionTokens(org.sb, "conn-a"))
    after = second.read_page("Contact", page.next_state, 100, fields)  # INVALID_FIELD → describe → retry
    assert after.calls == 3 and after.records and all("Lead_Score__c" not in r for r in after.records)
    assert second.read_drift("Contact").removed == ("Lead_Score__c",)
    org.sb.calls.clear()
    third = org.connector(_ConnectionTokens(org.sb, "conn-a"))  # plans from the renewed describe
    assert third.read_page("Contact", after.next_state, 100, fields).calls == 1
    assert third.read_drift("Contact").removed == ("Lead_Score__c",)


def test_an_added_field_is_reported_not_synced_and_a_retyped_one_is_reported(org: Org) -> None:
    conn = org.connector()
    planned = conn.describe("Contact")
    org.sb.add_field("Contact", {"name": "Shoe_Size__c", "type": "double"})
    org.sb.retype_field("Contact", "Lead_Score__c", "string")
    rid = next(iter(org.sb.store.dump("Contact"))).id
    org.sb.update_record("Contact", rid, {"Shoe_Size__c": 44.0})
    drift = conn.schema_drift("Contact", planned)
    assert drift.added == ("Shoe_Size__c",)
    assert drift.retyped == (("Lead_Score__c", "double", "string"),)
    assert conn.read_drift("Contact").added == ("Shoe_Size__c",)  # same, without a call
    res = read_all(conn, "Contact", StreamState(), page_size=100, fields=["LastName", "Lead_Score__c"])
    assert all("Shoe_Size__c" not in r for r in res.records)
    assert len(res.records) == 300


def test_requested_fields_the_org_lacks_are_dropped_and_never_reach_the_query(org: Org) -> None:
    conn = org.connector()
    hostile = ["LastName", "Nope__c", "Id FROM User WHERE Name != null --", "Email"]
    org.sb.calls.clear()
    page = conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 20, hostile)
    assert len(page.records) == 20
    assert set(page.records[0]) == {"Id", "SystemModstamp", "LastName", "Email"}
    assert set(conn.read_drift("Contact").removed) == {"Nope__c", "Id FROM User WHERE Name != null --"}
    with pytest.raises(ConfigError):
        conn.read_page("Contact FROM User", StreamState(), 5, ["LastName"])


# -- incremental lag window -------------------------------------------------------------------------


def test_the_lag_window_keeps_late_committed_records(org: Org) -> None:
    """A long transaction commits a record whose SystemModstamp is older than records already read;
    with ``modstamp_lag_s`` the cursor never passed that time, so the record still arrives."""
    now = [BASE_EPOCH_MS / 1000 + 10 * 86400]

    def clock() -> float:
        return now[0]

    conn = SalesforceConnector(org.config(modstamp_lag_s=60), CountingTokens(org.sb), clock=clock)
    naive = org.connector(overlap_s=0)  # no overlap window either: how a bare cursor behaves
    start = read_all(conn, "Contact", StreamState(), page_size=100, fields=["LastName"])
    naive_start = read_all(naive, "Contact", StreamState(), page_size=100, fields=["LastName"])
    # t0+5 s: a fast write commits; a slow transaction began at t0 (its modstamp) and commits later.
    t0_ms = int(now[0] * 1000)
    org.sb.store.clock.freeze(t0_ms + 5_000)
    fast = org.sb.create_record("Contact", {"LastName": "Fast", "External_Id__c": "fast"})
    now[0] += 10
    assert read_all(conn, "Contact", start.final_state, page_size=100, fields=["LastName"]).records == []
    naive_mid = read_all(naive, "Contact", naive_start.final_state, page_size=100, fields=["LastName"])
    assert _ids(naive_mid.records) == [fast]  # an unlagged cursor is now past t0 ...
    org.sb.store.clock.freeze(t0_ms)
    slow = org.sb.create_record("Contact", {"LastName": "Slow", "External_Id__c": "slow"})
    org.sb.store.clock.unfreeze()
    naive_end = read_all(naive, "Contact", naive_mid.final_state, page_size=100, fields=["LastName"])
    assert naive_end.records == []  # ... and never sees the slow record: lost
    now[0] += 120
    later = read_all(conn, "Contact", start.final_state, page_size=100, fields=["LastName"])
    assert sorted(_ids(later.records)) == sorted([fast, slow])
    assert later.final_state.window_end is None


# -- TLS and configuration ------------------------------------------------------------------------


def test_pinned_ca_survives_requests_ca_bundle_env(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pathlib.Path(SYSTEM_BUNDLE).exists():
        pytest.skip("no system CA bundle on this machine")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
    monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)
    conn = org.connector()
    assert conn.check().ok
    assert len(conn.read_page("Contact", StreamState(), 10, ["LastName"]).records) == 10
    unpinned = org.connector(ca_bundle=None)  # trusts the system bundle only: the sandbox CA is unknown
    result = unpinned.check()
    assert not result.ok and "TLS_UNTRUSTED" in result.message
    with pytest.raises(ConfigError) as err:
        unpinned.read_page("Contact", StreamState(), 10, ["LastName"])
    assert err.value.code == "TLS_UNTRUSTED"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"instance_url": "http://example.my.salesforce.com"}, "https"),
        ({"instance_url": "https://example.my.salesforce.com/services/data"}, "host"),
        ({"instance_url": "https://user:pw@example.my.salesforce.com"}, "host"),
        ({"api_version": "latest"}, "59.0"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "existing"),
        ({"external_id_field": "Ext Id"}, "API name"),
        ({"daily_quota_share": 0}, "greater than 0"),
    ],
)
def test_config_refuses(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SalesforceConfig.model_validate({"instance_url": "https://example.my.salesforce.com", **changes})


def test_config_normalises() -> None:
    cfg = SalesforceConfig(instance_url="https://Example.my.salesforce.com/", api_version="v60.0")
    assert (cfg.instance_url, cfg.api_version, cfg.page_size) == (
        "https://Example.my.salesforce.com",
        "60.0",
        2000,
    )


def test_exported_members_are_the_public_api() -> None:
    import connectors.salesforce as pkg

    assert sorted(pkg.__all__) == ["SalesforceConfig", "SalesforceConnector"]
    assert all(hasattr(pkg, name) for name in pkg.__all__)
    assert SalesforceConnector.name == "salesforce" and SalesforceConnector.config_model is SalesforceConfig
