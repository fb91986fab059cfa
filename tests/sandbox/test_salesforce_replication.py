"""The sandbox's vanishing-delete, late-commit and batch-size rules, seen by plain simple-salesforce
(what any client gets, not just crmhub's connector)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from tests.sandbox import salesforce_support
from tests.sandbox.salesforce_support import Org

sf_ca = salesforce_support.sf_ca
org = salesforce_support.org

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _window(sf: Any, kind: str, start_ms: int, end_ms: int) -> Any:
    return sf.restful(f"sobjects/Contact/{kind}/", params={"start": _iso(start_ms), "end": _iso(end_ms)})


def test_merge_deletes_the_losers_with_master_record_id_visible_in_query_all_only(org: Org) -> None:
    sf = org.client()
    master, a, b = sorted(r.id for r in org.sb.store.dump("Contact"))[:3]
    org.sb.merge_records("Contact", master, [a, b], {"LastName": "Kept"})
    rows = sf.query_all(f"SELECT Id FROM Contact WHERE Id IN ('{a}', '{b}')")  # noqa: S608 - ids from the store
    assert rows["totalSize"] == 0  # plain query: the losers are gone
    deleted = sf.query_all(
        "SELECT Id, IsDeleted, MasterRecordId FROM Contact WHERE IsDeleted = true AND MasterRecordId != null",
        include_deleted=True,
    )["records"]
    assert sorted((r["Id"], r["IsDeleted"], r["MasterRecordId"]) for r in deleted) == [
        (a, True, master),
        (b, True, master),
    ]
    with pytest.raises(ValueError, match="must exist"):
        org.sb.merge_records("Contact", master, [a])  # a loser is no longer live


def test_get_deleted_reports_the_window_then_an_emptied_bin(org: Org) -> None:
    sf = org.client()
    now = org.sb.store.clock.now_ms()
    victim = sorted(r.id for r in org.sb.store.dump("Contact"))[0]
    org.sb.delete_record("Contact", victim)
    body = _window(sf, "deleted", now - 5 * 60_000, now + 5 * 60_000)
    assert [d["id"] for d in body["deletedRecords"]] == [victim]
    assert body["deletedRecords"][0]["deletedDate"].endswith("+0000")
    before = body["earliestDateAvailable"]
    assert set(body) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert org.sb.empty_recycle_bin() == 1
    after = _window(sf, "deleted", now - 5 * 60_000, now + 5 * 60_000)
    assert after["deletedRecords"] == [] and after["earliestDateAvailable"] > before
    assert (
        sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)["totalSize"] == 0
    )


@pytest.mark.parametrize(
    ("kind", "start_days_ago", "span_min"),
    [("deleted", 16, 60), ("updated", 31, 60), ("deleted", 1, 1), ("updated", 0, -5)],
    ids=["deleted-beyond-15-days", "updated-beyond-30-days", "one-minute-window", "reversed"],
)
def test_replication_windows_outside_the_rules_are_invalid_replication_date(
    org: Org, kind: str, start_days_ago: int, span_min: int
) -> None:
    now = org.sb.store.clock.now_ms()
    start = now - start_days_ago * DAY_MS - 10 * 60_000
    with pytest.raises(SalesforceMalformedRequest) as err:
        _window(org.client(), kind, start, start + span_min * 60_000)
    body: Any = err.value.content  # simple-salesforce keeps the parsed JSON error body here
    assert body[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_records_in_the_bin_15_days_are_purged(org: Org) -> None:
    clock = org.sb.store.clock
    now = clock.now_ms()
    victim = sorted(r.id for r in org.sb.store.dump("Contact"))[0]
    clock.freeze(now)
    org.sb.delete_record("Contact", victim)
    clock.freeze(now + 16 * DAY_MS)
    try:
        body = _window(org.client(), "deleted", now + 15 * DAY_MS, now + 16 * DAY_MS)
        assert org.sb.store.get("Contact", victim, include_deleted=True) is None
        assert body["earliestDateAvailable"] >= _iso(now)[:16]
    finally:
        clock.unfreeze()


def test_latest_date_covered_stays_at_an_open_transactions_start(org: Org) -> None:
    sf = org.client()
    clock = org.sb.store.clock
    now = clock.now_ms()
    clock.freeze(now - 10 * 60_000)
    tx = org.sb.long_transaction()
    rid = tx.create_record("Contact", {"LastName": "Slow"})
    clock.freeze(now)
    try:
        body = _window(sf, "updated", now - 60 * 60_000, now)
        assert rid not in body["ids"]  # not committed: invisible
        assert body["latestDateCovered"][:16] <= _iso(now - 10 * 60_000)[:16]
        tx.commit()
        body = _window(sf, "updated", now - 60 * 60_000, now)
        assert rid in body["ids"] and body["latestDateCovered"].startswith(_iso(now)[:16])
    finally:
        clock.unfreeze()


def test_composite_delete_answers_one_delete_result_per_id_in_order(org: Org) -> None:
    sf = org.client()
    a, b = sorted(r.id for r in org.sb.store.dump("Contact"))[:2]
    org.sb.delete_record("Contact", b)
    ids = [a, b, "003000000000000ZZZ", "bad"]
    body = sf.restful(
        "composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"}
    )
    assert [(r["success"], [e["statusCode"] for e in r["errors"]]) for r in body] == [
        (True, []),
        (False, ["ENTITY_IS_DELETED"]),
        (False, ["NOT_FOUND"]),
        (False, ["MALFORMED_ID"]),
    ]
    c, d = sorted(r.id for r in org.sb.store.dump("Contact", include_deleted=False))[:2]
    rolled = sf.restful(
        "composite/sobjects", method="DELETE", params={"ids": f"{c},{b}", "allOrNone": "true"}
    )
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert org.sb.store.get("Contact", c) is not None  # rolled back
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join([d] * 201)})


@pytest.mark.parametrize(("fields", "batch"), [("LastName", 2000), ("Description", 1000)])
def test_query_batches_shrink_with_long_text_fields(org: Org, fields: str, batch: int) -> None:
    org.sb.seed({"Contact": 2000}, seed=9)
    first = org.client().query(f"SELECT Id, {fields} FROM Contact")  # noqa: S608 - a parameter
    assert len(first["records"]) == batch and first["totalSize"] == 2300


def test_two_custom_long_text_fields_hold_a_batch_to_200_rows(org: Org) -> None:
    for name in ("Notes_A__c", "Notes_B__c"):
        org.sb.add_field("Contact", {"name": name, "type": "textarea", "length": 32768, "custom": True})
    first = org.client().query("SELECT Id, Notes_A__c, Notes_B__c FROM Contact")
    assert len(first["records"]) == 200 and not first["done"]
