"""Writes: one outcome per input record in order (vendor codes, local refusals), chunking, idempotency,
awkward values (huge, unicode, NUL, lone surrogates, NaN) — a failed outcome or a typed error, never
a crash or a silent drop."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal

import pytest

from connectors.salesforce.writing import _vendor_outcome
from connectors.testing import read_all
from schemas.connector import OutcomeStatus, ReadMode, Record, StreamState, WriteMode
from schemas.errors import ConfigError
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

EXT = "External_Id__c"


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def test_partial_failures_map_to_each_input_record_with_vendor_and_local_codes(org: Org) -> None:
    conn = org.connector()
    dup = f"T-{_tag()}"
    batch: list[Record] = [
        required("Contact", _tag()),
        {**required("Contact", _tag()), "Email": "ana.secret@@example"},
        {"LastName": "No Key"},
        {**required("Contact", _tag()), "Lead_Score__c": math.nan},
        {**required("Contact", _tag()), "Title": "bad \ud800 surrogate"},
        {**required("Contact", _tag()), "Title": "x" * 129},
        {**required("Contact", _tag()), "Shoe_Size__c": 44},
        {**required("Contact", dup)},
        {**required("Contact", dup)},
        {**required("Contact", _tag()), "Birthdate": object()},
        required("Contact", _tag()),
    ]
    res = conn.write_batch("Contact", batch, WriteMode.UPSERT, external_id=EXT)
    assert [o.index for o in res.outcomes] == list(range(len(batch)))
    assert [(o.status, o.error_code) for o in res.outcomes] == [
        (OutcomeStatus.CREATED, None),
        (OutcomeStatus.FAILED, "INVALID_EMAIL_ADDRESS"),
        (OutcomeStatus.FAILED, "MISSING_EXTERNAL_ID"),
        (OutcomeStatus.FAILED, "INVALID_VALUE"),
        (OutcomeStatus.FAILED, "INVALID_VALUE"),
        (OutcomeStatus.FAILED, "STRING_TOO_LONG"),
        (OutcomeStatus.FAILED, "INVALID_FIELD"),
        (OutcomeStatus.FAILED, "DUPLICATE_EXTERNAL_ID"),
        (OutcomeStatus.FAILED, "DUPLICATE_EXTERNAL_ID"),
        (OutcomeStatus.FAILED, "INVALID_VALUE"),
        (OutcomeStatus.CREATED, None),
    ]
    assert [o.external_id for o in res.outcomes] == [
        None if i == 2 else str(r[EXT]) for i, r in enumerate(batch)
    ]
    assert res.calls == 1  # local refusals cost nothing; the rest went in one request
    for o in res.failed:
        assert o.error_message and "secret" not in o.error_message and "xxxx" not in o.error_message
        assert not o.retryable
    assert (
        res.outcomes[1].error_message
        == "Salesforce rejected the record: INVALID_EMAIL_ADDRESS (fields: Email)"
    )
    assert res.outcomes[3].error_message == "value of Lead_Score__c cannot be sent as JSON"


def test_201_records_cost_two_calls_and_a_repeat_creates_nothing(org: Org) -> None:
    conn = org.connector()
    records = [required("Account", _tag()) for _ in range(201)]
    org.sb.calls.clear()
    first = conn.write_batch("Account", records, WriteMode.UPSERT, external_id=EXT)
    assert first.calls == 2 and org.sb.calls.counts() == {"sf.collections_upsert": 2}
    assert first.counts()["created"] == 201
    before = org.sb.store.count("Account")
    again = conn.write_batch("Account", records, WriteMode.UPSERT, external_id=EXT)
    assert again.counts()["updated"] == 201 and again.calls == 2
    assert [o.id for o in again.outcomes] == [o.id for o in first.outcomes]
    assert org.sb.store.count("Account") == before


def test_each_record_is_sent_as_the_stream_type(org: Org) -> None:
    conn = org.connector()
    rec = {**required("Contact", _tag()), "attributes": {"type": "Lead"}}
    res = conn.write_batch("Contact", [rec], WriteMode.UPSERT, external_id=EXT)
    assert res.outcomes[0].status is OutcomeStatus.CREATED
    row = org.sb.store.get("Contact", str(res.outcomes[0].id))
    assert row is not None and row.data["External_Id__c"] == rec[EXT]


def test_unicode_edge_cases_round_trip_through_write_and_read(org: Org) -> None:
    conn = org.connector()
    values = {
        "emoji": "Zoë 👩🏽‍💻 🇪🇺",
        "rtl": "\u202eevil.exe\u202c שלום مرحبا",
        "combining": "e\u0301\u0327 Å",
        "nul": "before\x00after",
        "quotes": "O'Brien \"\\ \n\t",
    }
    records = [{**required("Contact", _tag()), "Title": v} for v in values.values()]
    res = conn.write_batch("Contact", records, WriteMode.UPSERT, external_id=EXT)
    assert all(o.status is OutcomeStatus.CREATED for o in res.outcomes), res.outcomes
    ids = {str(o.id): str(r["Title"]) for o, r in zip(res.outcomes, records, strict=True)}
    for threshold in (1_000_000, 0):  # REST and Bulk (CSV) reads
        reader = org.connector(bulk_threshold=threshold)
        got = read_all(reader, "Contact", StreamState(mode=ReadMode.FULL), page_size=500, fields=["Title"])
        titles = {str(r["Id"]): r["Title"] for r in got.records if str(r["Id"]) in ids}
        assert titles == ids


def test_a_2mb_text_value_is_a_per_record_failure_on_write_and_arrives_whole_on_read(org: Org) -> None:
    conn = org.connector()
    huge = "Lorem ipsum ✓ " * (2 * 1024 * 1024 // 14)
    res = conn.write_batch(
        "Contact",
        [{**required("Contact", _tag()), "Description": huge}, required("Contact", _tag())],
        WriteMode.UPSERT,
        external_id=EXT,
    )
    assert [(o.status, o.error_code) for o in res.outcomes] == [
        (OutcomeStatus.FAILED, "STRING_TOO_LONG"),
        (OutcomeStatus.CREATED, None),
    ]
    assert huge[:50] not in (res.outcomes[0].error_message or "")
    # A record already holding 2 MB (written by another path) is read whole, REST and Bulk.
    rid = org.sb.create_record("Contact", {"LastName": "Huge", "Description": huge})
    for threshold in (1_000_000, 0):
        reader = org.connector(bulk_threshold=threshold)
        got = read_all(
            reader, "Contact", StreamState(mode=ReadMode.FULL), page_size=400, fields=["Description"]
        )
        assert [r["Description"] for r in got.records if r["Id"] == rid] == [huge]


def test_create_update_and_delete_modes(org: Org) -> None:
    conn = org.connector()
    created = conn.write_batch(
        "Lead", [required("Lead", _tag()) for _ in range(3)], WriteMode.CREATE, external_id=EXT
    )
    assert [o.status for o in created.outcomes] == [OutcomeStatus.CREATED] * 3
    ids = [str(o.id) for o in created.outcomes]
    updated = conn.write_batch(
        "Lead",
        [{"Id": ids[0], "Company": "Renamed"}, {"Company": "no id"}, {"Id": ids[1], "Email": "bad"}],
        WriteMode.UPDATE,
        external_id=EXT,
    )
    assert [(o.status, o.error_code) for o in updated.outcomes] == [
        (OutcomeStatus.UPDATED, None),
        (OutcomeStatus.FAILED, "MISSING_ID"),
        (OutcomeStatus.FAILED, "INVALID_EMAIL_ADDRESS"),
    ]
    row = org.sb.store.get("Lead", ids[0])
    assert row is not None and row.data["Company"] == "Renamed"
    batch: list[Record] = [{"Id": ids[0]}, {"Id": ids[1]}, {"Id": "00Q000000000000ZZZ"}, {"Id": "nope"}]
    deleted = conn.write_batch("Lead", batch, WriteMode.DELETE, external_id=EXT)
    assert [(o.status, o.error_code) for o in deleted.outcomes] == [
        (OutcomeStatus.DELETED, None),
        (OutcomeStatus.DELETED, None),
        (OutcomeStatus.FAILED, "NOT_FOUND"),
        (OutcomeStatus.FAILED, "MALFORMED_ID"),
    ]
    again = conn.write_batch("Lead", batch[:2], WriteMode.DELETE, external_id=EXT)
    assert [o.status for o in again.outcomes] == [OutcomeStatus.DELETED] * 2  # a retried delete is fine


def test_values_json_cannot_carry_fail_locally_and_decimal_and_dates_are_sent(org: Org) -> None:
    import datetime as dt

    conn = org.connector()
    ok = {**required("Contact", _tag()), "Lead_Score__c": Decimal("12.5"), "Birthdate": dt.date(1990, 5, 17)}
    records: list[Record] = [
        ok,
        {**required("Contact", _tag()), "Lead_Score__c": math.inf},
        {**required("Contact", _tag()), "Lead_Score__c": Decimal("NaN")},
        {**required("Contact", _tag()), "LastName": "\udfff"},
    ]
    res = conn.write_batch("Contact", records, WriteMode.UPSERT, external_id=EXT)
    assert [o.error_code for o in res.outcomes] == [None, "INVALID_VALUE", "INVALID_VALUE", "INVALID_VALUE"]
    row = org.sb.store.get("Contact", str(res.outcomes[0].id))
    assert row is not None and (row.data["Lead_Score__c"], row.data["Birthdate"]) == (12.5, "1990-05-17")


def test_an_upsert_key_that_is_not_an_external_id_is_a_config_error(org: Org) -> None:
    conn = org.connector()
    with pytest.raises(ConfigError):
        conn.write_batch("Contact", [required("Contact", _tag())], WriteMode.UPSERT, external_id="LastName")
    with pytest.raises(ConfigError):
        conn.write_batch("Contact", [required("Contact", _tag())], WriteMode.UPSERT, external_id="x; DROP")


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("UNABLE_TO_LOCK_ROW", True),
        ("ALL_OR_NONE_OPERATION_ROLLED_BACK", True),
        ("INVALID_EMAIL_ADDRESS", False),
    ],
)
def test_transient_per_record_codes_are_retryable(code: str, retryable: bool) -> None:
    res = {
        "success": False,
        "errors": [{"statusCode": code, "message": "row of ana@example.com", "fields": []}],
    }
    outcome = _vendor_outcome(3, "X-1", res, WriteMode.UPSERT)
    assert (outcome.index, outcome.error_code, outcome.retryable) == (3, code, retryable)
    assert "ana@example.com" not in (outcome.error_message or "")
