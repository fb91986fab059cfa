"""Contract tests of the Salesforce emulator, driven by simple-salesforce 1.12.10 over real HTTPS."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.fake import BASE_EPOCH_MS
from sandbox.faults import FaultPlan, FaultRule
from sandbox.salesforce.engine import format_datetime
from sandbox.salesforce.ids import is_valid_id
from tests.sandbox import salesforce_support
from tests.sandbox.salesforce_support import Org

# fixtures shared by the Salesforce test modules
sf_ca = salesforce_support.sf_ca
org = salesforce_support.org
big_org = salesforce_support.big_org

V = "v59.0"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FIXTURES = pathlib.Path("/work/shared/vendor-fixtures/salesforce")
REQUEST_LIMIT_BODY = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def content(err: pytest.ExceptionInfo[SalesforceError]) -> Any:
    """The parsed JSON error body simple-salesforce attached to its exception."""
    return err.value.content


def upsert(
    sf: Any, records: list[dict[str, Any]], *, all_or_none: bool = False, field: str = "External_Id__c"
) -> Any:
    body = {"allOrNone": all_or_none, "records": [{"attributes": {"type": "Contact"}, **r} for r in records]}
    return sf.restful(f"composite/sobjects/Contact/{field}", method="PATCH", json=body)


# -- TLS ----------------------------------------------------------------------------------------


def test_naive_verify_is_overridden_by_requests_ca_bundle_but_pinned_adapter_works(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pathlib.Path(SYSTEM_BUNDLE).exists():
        pytest.skip("no system CA bundle on this machine")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
    monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)
    naive = requests.Session()
    naive.verify = str(org.ca.ca_path)
    with naive, pytest.raises(requests.exceptions.SSLError):
        naive.get(f"{org.srv.url}/services/data/")
    good = org.session()
    assert good.get(f"{org.srv.url}/services/data/").status_code == 200


# -- query paging -------------------------------------------------------------------------------


def test_query_all_iter_pages_to_exhaustion(big_org: Org) -> None:
    sf = big_org.client()
    big_org.sb.calls.clear()
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id, Name, Email FROM Contact")]
    assert len(ids) == 6500
    assert len(set(ids)) == 6500
    assert ids == sorted(ids)  # default order: Id, i.e. creation order
    calls = big_org.sb.calls.counts()
    assert calls["sf.query"] == 1
    assert calls["sf.query_more"] == math.ceil(6500 / 2000) - 1


def test_first_page_shape_and_relative_next_records_url(big_org: Org) -> None:
    sf = big_org.client()
    page = sf.query("SELECT Id, LastName, MailingAddress, SystemModstamp FROM Contact")
    assert (page["totalSize"], page["done"], len(page["records"])) == (6500, False, 2000)
    url = page["nextRecordsUrl"]
    assert url.startswith(f"/services/data/{V}/query/01g")
    locator = url.rsplit("/", 1)[1]
    assert locator.endswith("-2000")
    assert is_valid_id(locator.split("-")[0])
    rec = page["records"][0]
    assert list(rec) == ["attributes", "Id", "LastName", "MailingAddress", "SystemModstamp"]
    assert rec["attributes"] == {"type": "Contact", "url": f"/services/data/{V}/sobjects/Contact/{rec['Id']}"}
    assert rec["SystemModstamp"] == format_datetime(BASE_EPOCH_MS)
    assert set(rec["MailingAddress"]) == {
        "city",
        "country",
        "geocodeAccuracy",
        "latitude",
        "longitude",
        "postalCode",
        "state",
        "street",
    }
    second = sf.query_more(url, identifier_is_url=True)
    assert second["nextRecordsUrl"].endswith("-4000")
    assert {r["Id"] for r in second["records"]}.isdisjoint(r["Id"] for r in page["records"])


def test_batch_size_header_is_honoured_within_documented_bounds(big_org: Org) -> None:
    sf = big_org.client()
    q = "SELECT Id FROM Contact"
    assert len(sf.query(q, headers={"Sforce-Query-Options": "batchSize=500"})["records"]) == 500
    assert len(sf.query(q, headers={"Sforce-Query-Options": "batchSize=10"})["records"]) == 200
    assert len(sf.query(q, headers={"Sforce-Query-Options": "batchSize=9000"})["records"]) == 2000


def test_count_limit_and_filters(big_org: Org) -> None:
    sf = big_org.client()
    assert sf.query("SELECT COUNT() FROM Contact") == {"totalSize": 6500, "done": True, "records": []}
    rows = sf.query_all("SELECT Id, LastName FROM Contact WHERE LastName = 'O\\'Brien'")["records"]
    expected = [r for r in big_org.sb.live_records("Contact") if r["LastName"] == "O'Brien"]
    assert rows
    assert len(rows) == len(expected)
    # SOQL text comparison is case-insensitive.
    assert sf.query("SELECT COUNT() FROM Contact WHERE LastName = 'o\\'brien'")["totalSize"] == len(expected)
    limited = sf.query("SELECT Id FROM Contact ORDER BY Lead_Score__c DESC, Id LIMIT 7")
    assert (limited["totalSize"], limited["done"], len(limited["records"])) == (7, True, 7)
    like = sf.query("SELECT COUNT() FROM Contact WHERE Email LIKE '%.1%@example-1.test'")["totalSize"]
    assert like == sum(
        1
        for r in big_org.sb.live_records("Contact")
        if r["Email"].endswith("@example-1.test") and ".1" in r["Email"]
    )


def test_keyset_incremental_sync_with_ties_returns_every_record_once(big_org: Org) -> None:
    sf = big_org.client()
    seen: list[str] = []
    stamp, last_id = "1970-01-01T00:00:00.000+0000", ""
    pages = 0
    while True:
        soql = (
            "SELECT Id, SystemModstamp FROM Contact "  # noqa: S608 - SOQL, not SQL
            f"WHERE SystemModstamp > {stamp} OR (SystemModstamp = {stamp} AND Id > '{last_id}') "
            "ORDER BY SystemModstamp, Id LIMIT 997"  # not a multiple of the tie group: pages end in ties
        )
        records = sf.query(soql)["records"]
        pages += 1
        if not records:
            break
        seen.extend(r["Id"] for r in records)
        stamp, last_id = records[-1]["SystemModstamp"], records[-1]["Id"]
    assert len(seen) == 6500
    assert len(set(seen)) == 6500
    assert pages == math.ceil(6500 / 997) + 1


def test_query_all_includes_deleted_with_is_deleted(org: Org) -> None:
    sf = org.client()
    victims = [r["Id"] for r in sf.query("SELECT Id FROM Contact ORDER BY Id LIMIT 3")["records"]]
    for sf_id in victims:
        assert sf.Contact.delete(sf_id) == 204
    live = sf.query_all("SELECT Id, IsDeleted FROM Contact")
    assert live["totalSize"] == 297
    assert not any(r["IsDeleted"] for r in live["records"])
    everything = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)["records"]
    assert len(everything) == 300
    assert sorted(r["Id"] for r in everything if r["IsDeleted"]) == sorted(victims)
    only_deleted = sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert only_deleted["totalSize"] == 3


def test_query_all_paging_continues_the_deleted_rows(big_org: Org) -> None:
    sf = big_org.client()
    page = sf.query("SELECT Id FROM Contact", include_deleted=True)
    # queryAll's nextRecordsUrl still says /query/ (DOC_NOTES) yet continues the queryAll set.
    assert f"/services/data/{V}/query/" in page["nextRecordsUrl"]


def test_expired_query_locator(big_org: Org) -> None:
    sf = big_org.client()
    page = sf.query("SELECT Id FROM Contact")
    big_org.sb.cursor_ttl_s = 0.0
    try:
        with pytest.raises(SalesforceMalformedRequest) as err:
            sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    finally:
        big_org.sb.cursor_ttl_s = 900.0
    assert content(err)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# -- describe and drift -------------------------------------------------------------------------


def test_describe_compound_and_external_id_fields(org: Org) -> None:
    sf = org.client()
    d = sf.Contact.describe()
    fields = {f["name"]: f for f in d["fields"]}
    assert d["name"] == "Contact"
    assert d["keyPrefix"] == "003"
    assert fields["MailingAddress"]["type"] == "address"
    assert fields["MailingCity"]["compoundFieldName"] == "MailingAddress"
    assert fields["LastName"]["compoundFieldName"] == "Name"
    assert fields["External_Id__c"]["externalId"]
    assert fields["External_Id__c"]["unique"]
    assert fields["Customer_Tier__c"]["type"] == "picklist"
    assert fields["Lead_Score__c"]["type"] == "double"
    assert not fields["SystemModstamp"]["updateable"]
    if (FIXTURES / "describe_contact.cumulusci.full.json").exists():
        recorded = json.loads((FIXTURES / "describe_contact.cumulusci.full.json").read_text())
        assert set(d) == set(recorded)
        assert set(fields["Email"]) == set(recorded["fields"][0])
        rec_fields = {f["name"]: f for f in recorded["fields"]}
        for name in ("LastName", "MailingCity", "Email", "MailingAddress", "Id"):
            for key in (
                "type",
                "length",
                "byteLength",
                "compoundFieldName",
                "soapType",
                "nillable",
                "createable",
            ):
                assert fields[name][key] == rec_fields[name][key], (name, key)
    names = {s["name"] for s in sf.describe()["sobjects"]}
    assert {"Contact", "Account", "Lead"} <= names
    assert {f["name"] for f in sf.Lead.describe()["fields"]} >= {"Company", "Address", "External_Id__c"}


def test_schema_drift_through_the_python_handle(org: Org) -> None:
    sf = org.client()
    org.sb.add_field("Contact", {"name": "Region__c", "type": "string", "label": "Region", "length": 40})
    org.sb.drop_field("Contact", "Customer_Tier__c")
    org.sb.retype_field("Contact", "Lead_Score__c", "string", length=20)
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert fields["Region__c"]["custom"]
    assert "Customer_Tier__c" not in fields
    assert fields["Lead_Score__c"]["type"] == "string"
    assert sf.query("SELECT Region__c FROM Contact LIMIT 1")["records"][0]["Region__c"] is None
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id, Customer_Tier__c FROM Contact")
    assert content(err)[0]["errorCode"] == "INVALID_FIELD"


# -- Bulk API 2.0 -------------------------------------------------------------------------------


def test_bulk2_query_equals_rest_query(big_org: Org) -> None:
    sf = big_org.client()
    soql = "SELECT Id, LastName, Email, Lead_Score__c FROM Contact"
    chunks = list(sf.bulk2.Contact.query(soql, max_records=2500, wait=0))
    assert len(chunks) == 3
    bulk_rows = [row for chunk in chunks for row in csv.DictReader(io.StringIO(chunk))]
    rest_rows = sf.query_all(soql)["records"]
    assert len(bulk_rows) == len(rest_rows) == 6500
    assert [(r["Id"], r["LastName"], r["Email"]) for r in bulk_rows] == [
        (r["Id"], r["LastName"], r["Email"]) for r in rest_rows
    ]
    assert bulk_rows[0]["Lead_Score__c"] == repr(float(rest_rows[0]["Lead_Score__c"]))  # Bulk prints "33.0"


def test_bulk2_results_headers_and_states(big_org: Org) -> None:
    s = big_org.session()
    base = f"{big_org.srv.url}/services/data/{V}/jobs/query"
    auth = {"Authorization": f"Bearer {big_org.token}", "Content-Type": "application/json"}
    job = s.post(
        base, headers=auth, json={"operation": "query", "query": "SELECT Id, SystemModstamp FROM Contact"}
    )
    assert job.status_code == 200
    info = job.json()
    assert info["state"] == "UploadComplete"
    assert info["id"].startswith("750")
    assert set(info) >= {
        "apiVersion",
        "columnDelimiter",
        "concurrencyMode",
        "contentType",
        "lineEnding",
        "object",
    }
    early = s.get(f"{base}/{info['id']}/results", headers=auth)
    assert early.status_code == 412
    states = [s.get(f"{base}/{info['id']}", headers=auth).json()["state"] for _ in range(2)]
    assert states == ["InProgress", "JobComplete"]
    first = s.get(f"{base}/{info['id']}/results", headers=auth, params={"maxRecords": 6000})
    assert first.headers["Sforce-NumberOfRecords"] == "6000"
    assert first.headers["Sforce-Locator"] not in ("", "null")
    assert first.headers["content-type"].startswith("text/csv")
    lines = first.text.splitlines()
    assert lines[0] == '"Id","SystemModstamp"'
    assert lines[1].endswith('.000Z"')
    last = s.get(
        f"{base}/{info['id']}/results",
        headers=auth,
        params={"maxRecords": "6000", "locator": first.headers["Sforce-Locator"]},
    )
    assert (last.headers["Sforce-NumberOfRecords"], last.headers["Sforce-Locator"]) == ("500", "null")
    assert s.delete(f"{base}/{info['id']}", headers=auth).status_code == 204


def test_bulk2_rejects_compound_fields(org: Org) -> None:
    sf = org.client()
    with pytest.raises(SalesforceMalformedRequest) as err:
        list(sf.bulk2.Contact.query("SELECT Id, MailingAddress FROM Contact", wait=0))
    assert content(err) == [
        {"message": "Selecting compound data not supported in Bulk Query", "errorCode": "API_ERROR"}
    ]


def test_bulk2_query_all_includes_deleted(org: Org) -> None:
    sf = org.client()
    victim = sf.query("SELECT Id FROM Contact LIMIT 1")["records"][0]["Id"]
    sf.Contact.delete(victim)
    rows = [
        r
        for c in sf.bulk2.Contact.query_all("SELECT Id, IsDeleted FROM Contact", wait=0)
        for r in csv.DictReader(io.StringIO(c))
    ]
    assert len(rows) == 300
    assert [r["Id"] for r in rows if r["IsDeleted"] == "true"] == [victim]


# -- sObject Collections ------------------------------------------------------------------------


def test_collections_upsert_created_updated_and_partial_failures(org: Org) -> None:
    sf = org.client()
    existing = sf.query("SELECT Id, External_Id__c FROM Contact ORDER BY Id LIMIT 1")["records"][0]
    result = upsert(
        sf,
        [
            {"External_Id__c": existing["External_Id__c"], "LastName": "Updated"},
            {"External_Id__c": "NEW-1", "LastName": "Created", "Email": "new.one@example.test"},
            {"External_Id__c": "NEW-2", "Email": "not an email"},
            {"External_Id__c": "NEW-3", "LastName": "x" * 81},
            {"External_Id__c": "NEW-4", "LastName": "Bad", "Nope__c": 1},
        ],
    )
    assert result[0] == {"id": existing["Id"], "success": True, "errors": [], "created": False}
    assert result[1]["success"]
    assert result[1]["created"]
    assert is_valid_id(result[1]["id"])
    assert result[2] == {
        "success": False,
        "errors": [
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [LastName]",
                "fields": ["LastName"],
            },
            {
                "statusCode": "INVALID_EMAIL_ADDRESS",
                "message": "Email: invalid email address: not an email",
                "fields": ["Email"],
            },
        ],
    }
    assert result[3]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert result[3]["errors"][0]["message"].endswith("(max length=80)")
    assert result[4]["errors"] == [
        {
            "statusCode": "INVALID_FIELD",
            "message": "No such column 'Nope__c' on sobject of type Contact",
            "fields": [],
        }
    ]
    assert sf.Contact.get(existing["Id"])["LastName"] == "Updated"
    assert sf.Contact.get_by_custom_id("External_Id__c", "NEW-1")["Name"] == "Created"
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 301


def test_collections_all_or_none_rolls_back(org: Org) -> None:
    sf = org.client()
    result = upsert(
        sf,
        [{"External_Id__c": "R-1", "LastName": "Fine"}, {"External_Id__c": "R-2", "LastName": ""}],
        all_or_none=True,
    )
    assert result[0] == {
        "success": False,
        "errors": [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using "
                "AllOrNone header",
                "fields": [],
            }
        ],
    }
    assert result[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query("SELECT COUNT() FROM Contact WHERE External_Id__c IN ('R-1', 'R-2')")["totalSize"] == 0


def test_collections_limit_of_200_records(org: Org) -> None:
    sf = org.client()
    records = [{"External_Id__c": f"L-{i}", "LastName": f"N{i}"} for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as err:
        upsert(sf, records)
    assert content(err)[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert len(upsert(sf, records[:200])) == 200


def test_collections_create_update_and_duplicates(org: Org) -> None:
    sf = org.client()
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Name": "Acme", "External_Id__c": "ACME"},
                {"attributes": {"type": "Account"}, "Name": "Acme 2", "External_Id__c": "ACME"},
                {"attributes": {"type": "Lead"}, "LastName": "Lee"},
            ],
        },
    )
    assert created[0]["success"]
    assert created[1] == {
        "success": False,
        "errors": [
            {
                "statusCode": "DUPLICATE_VALUE",
                "message": "duplicate value found: External_Id__c duplicates value on record with id: "
                f"{created[0]['id']}",
                "fields": [],
            }
        ],
    }
    assert created[2]["errors"][0]["message"] == "Required fields are missing: [Company]"
    updated = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Account"}, "Id": created[0]["id"], "Industry": "Retail"}]},
    )
    assert updated == [{"id": created[0]["id"], "success": True, "errors": []}]
    dup = upsert(sf, [{"External_Id__c": "D", "LastName": "a"}, {"External_Id__c": "D", "LastName": "b"}])
    assert [r["errors"][0]["statusCode"] for r in dup] == ["DUPLICATE_EXTERNAL_ID"] * 2


def test_upsert_keyed_on_id_like_the_recorded_cassette(org: Org) -> None:
    sf = org.client()
    recorded = [
        {"FirstName": "Lindsay", "LastName": "Sitwell", "Email": "lindsay.bluth@example.com", "Id": None}
    ]
    result = upsert(sf, recorded, field="Id")
    assert list(result[0]) == ["id", "success", "errors", "created"]
    assert result[0]["created"]


# -- single records -----------------------------------------------------------------------------


def test_sobject_crud_and_upsert_by_external_id(org: Org) -> None:
    sf = org.client()
    new = sf.Contact.create({"LastName": "Solo", "Email": "solo@example.test"})
    assert set(new) == {"id", "success", "errors"}
    rec = sf.Contact.get(new["id"])
    assert (rec["Name"], rec["IsDeleted"]) == ("Solo", False)
    before = rec["SystemModstamp"]
    assert sf.Contact.update(new["id"], {"FirstName": "Han"}) == 204
    after = sf.Contact.get(new["id"])
    assert after["Name"] == "Han Solo"
    assert after["SystemModstamp"] >= before
    assert sf.Contact.upsert("External_Id__c/EXT-9", {"LastName": "Ext"}) == 201
    assert sf.Contact.upsert("External_Id__c/EXT-9", {"FirstName": "Again"}) == 200
    assert sf.Contact.delete(new["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(new["id"])
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Contact.create({"FirstName": "NoLast"})
    assert content(err) == [
        {
            "message": "Required fields are missing: [LastName]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["LastName"],
        }
    ]


# -- errors, limits, faults ---------------------------------------------------------------------


def test_invalid_session_raises_expired_session(org: Org) -> None:
    sf = org.client()
    org.sb.oauth.expire_all_access_tokens()
    with pytest.raises(SalesforceExpiredSession) as err:
        sf.query("SELECT Id FROM Contact")
    assert err.value.status == 401
    assert content(err) == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_malformed_and_invalid_field_errors(org: Org) -> None:
    sf = org.client()
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id, FROM Contact")
    assert content(err)[0]["errorCode"] == "MALFORMED_QUERY"
    assert content(err)[0]["message"].endswith("unexpected token: 'FROM'")
    with pytest.raises(SalesforceMalformedRequest) as err2:
        sf.query("SELECT SetupOwnerId FROM Contact")
    assert content(err2)[0]["errorCode"] == "INVALID_FIELD"
    assert "ERROR at Row:1:Column:8" in content(err2)[0]["message"]


def test_limit_info_header_counts_calls_and_limits_resource(org: Org) -> None:
    sf = org.client()
    sf.query("SELECT Id FROM Contact LIMIT 1")
    first = sf.api_usage["api-usage"].used
    sf.query("SELECT Id FROM Contact LIMIT 1")
    assert sf.api_usage["api-usage"].used == first + 1
    assert sf.api_usage["api-usage"].total == 100_000
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 100_000, "Remaining": 100_000 - (first + 2)}
    assert org.sb.api_usage == first + 2


def test_quota_exhaustion_is_request_limit_exceeded(org: Org) -> None:
    sf = org.client()
    org.sb.set_daily_limit(10, used=9)
    sf.query("SELECT Id FROM Contact LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert err.value.status == 403
    assert content(err) == REQUEST_LIMIT_BODY
    if (FIXTURES / "error_request_limit_exceeded.captured.json").exists():
        assert content(err) == json.loads(
            (FIXTURES / "error_request_limit_exceeded.captured.json").read_text()
        )


def test_injected_server_error_and_throttle_carry_retry_after(org: Org) -> None:
    s = org.session()
    url = f"{org.srv.url}/services/data/{V}/query"
    auth = {"Authorization": f"Bearer {org.token}"}
    org.sb.faults.set_plan(
        FaultPlan(rules=[FaultRule(endpoint="sf.query", server_error=1.0, retry_after_s=3)])
    )
    r = s.get(url, params={"q": "SELECT Id FROM Contact"}, headers=auth)
    assert (r.status_code, r.headers["Retry-After"]) == (503, "3")
    assert r.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    org.sb.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="sf.query", rate_limit=1.0, retry_after_s=2)]))
    r = s.get(url, params={"q": "SELECT Id FROM Contact"}, headers=auth)
    assert (r.status_code, r.headers["Retry-After"]) == (403, "2")
    assert r.json() == [
        {"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    org.sb.faults.clear()
    assert s.get(url, params={"q": "SELECT Id FROM Contact"}, headers=auth).status_code == 200


def test_dropped_connection_and_malformed_body(org: Org) -> None:
    sf = org.client()
    org.sb.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="sf.query", drop=1.0)]))
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        sf.query("SELECT Id FROM Contact")
    org.sb.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="sf.query", malformed=1.0)]))
    with pytest.raises(requests.exceptions.JSONDecodeError):
        sf.query("SELECT Id FROM Contact")
    org.sb.faults.clear()


def test_versions_resource_needs_no_auth_and_unknown_versions_404(org: Org) -> None:
    s = org.session()
    versions = s.get(f"{org.srv.url}/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    r = s.get(f"{org.srv.url}/services/data/v99.0/limits", headers={"Authorization": f"Bearer {org.token}"})
    assert r.status_code == 404
