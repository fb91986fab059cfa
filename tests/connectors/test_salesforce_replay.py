"""Recorded and documented Salesforce response shapes replayed over HTTPS through the real connector,
one test per shape: ours (``tests/fixtures/vendor/salesforce``, each with its SOURCE) and the
relevant files of ``/work/shared/vendor-fixtures/salesforce`` (SOURCES.md there)."""

from __future__ import annotations

import datetime as dt
import pathlib
from urllib.parse import parse_qs, unquote_plus

import pytest

from connectors.salesforce.client import InvalidField
from connectors.salesforce.deletelog import PURGED, UNAVAILABLE
from connectors.testing import ReadResult, read_all
from schemas.connector import OutcomeStatus, ReadMode, StreamState, WriteMode
from schemas.errors import AuthError, DataError, RateLimited, TransientError
from tests.connectors import salesforce_harness, salesforce_replay
from tests.connectors.salesforce_harness import SYSTEM_BUNDLE
from tests.connectors.salesforce_replay import Reply, Served, StaticTokens, V, ours, shared

sf_ca = salesforce_harness.sf_ca
served = salesforce_replay.served

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]
DESCRIBE = f"{V}/sobjects/Contact/describe"
SOURCE_DIR = salesforce_replay.OURS


@pytest.fixture(autouse=True)
def _system_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if pathlib.Path(SYSTEM_BUNDLE).exists():
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
        monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)


def _full_bulk_read(served: Served) -> ReadResult:
    """A full read that asks for Bulk from its first page (``bulk_threshold=0``)."""
    conn = served.connector(bulk_threshold=0)
    return read_all(conn, "Contact", StreamState(mode=ReadMode.FULL), page_size=10, fields=FIELDS)


def _describe(served: Served) -> None:
    served.replay.add("GET", DESCRIBE, shared("describe_contact.cumulusci.full.json"))


def test_every_fixture_of_ours_names_its_source() -> None:
    import json

    files = sorted(SOURCE_DIR.glob("*.json"))
    assert files
    for path in files:
        env = json.loads(path.read_text())
        assert set(env) == {"SOURCE", "status", "headers", "content_type", "body"}, path.name
        assert "http" in env["SOURCE"] or "Written for crmhub" in env["SOURCE"], path.name


# -- ours -------------------------------------------------------------------------------------------


def test_a_short_first_batch_is_followed_by_its_relative_next_records_url(served: Served) -> None:
    _describe(served)
    served.replay.add("GET", f"{V}/query", ours("query_short_batch_page1.json"))
    served.replay.add("GET", f"{V}/query/01g5d00000AbCdEAAZ-3", ours("query_short_batch_page2.json"))
    page = served.connector().read_page("Contact", StreamState(mode=ReadMode.FULL), 2000, FIELDS)
    assert [r["LastName"] for r in page.records] == ["Ada", "Bea", "Cy", "Di", "Ed"] and not page.has_more
    assert page.calls == 3  # describe, the query (3 rows), the rest by nextRecordsUrl (2 rows)


def test_merged_losers_in_query_all_are_deletes_naming_their_master(served: Served) -> None:
    _describe(served)
    served.replay.add("GET", f"{V}/queryAll", ours("queryall_merged_losers.json"))
    page = served.connector().read_page("Contact", StreamState(), 100, FIELDS)
    assert [r["LastName"] for r in page.records] == ["Winner"]
    assert page.deleted_ids == ["0035d0000000008AAA", "0035d0000000009AAA"]
    assert page.merged_into == dict.fromkeys(page.deleted_ids, "0035d0000000007AAA")
    (_, _, query), *_ = [e for e in served.replay.log if e[1].startswith(f"{V}/queryAll")]
    soql = unquote_plus(parse_qs(query)["q"][0])
    assert "IsDeleted" in soql and "MasterRecordId" in soql  # both asked for, from the recorded describe


def _minute(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:00.000+0000")


def test_a_delete_log_purged_after_the_last_look_asks_for_reconciliation(served: Served) -> None:
    _describe(served)
    now = dt.datetime.now(dt.UTC)
    served.replay.add(
        "GET",
        f"{V}/sobjects/Contact/deleted",
        ours("get_deleted_bin_purged.json", purged=_minute(now), now=_minute(now)),
    )
    served.replay.add("GET", f"{V}/queryAll", ours("query_short_batch_page2.json"))
    covered = str(int((now - dt.timedelta(minutes=30)).timestamp() * 1000))
    state = StreamState(cursor="2024-01-01T00:00:00.000+0000", extra={"covered": covered, "seen": ""})
    page = served.connector().read_page("Contact", state, 100, FIELDS)
    assert page.reconcile == PURGED and [r["LastName"] for r in page.records] == ["Di", "Ed"]
    assert served.replay.count("GET", f"{V}/sobjects/Contact/deleted") == 1
    assert page.next_state.extra["covered"] == str(
        int(now.replace(second=0, microsecond=0).timestamp() * 1000)
    )


def test_a_refused_delete_log_window_asks_for_reconciliation_and_reads_on(served: Served) -> None:
    _describe(served)
    served.replay.add(
        "GET", f"{V}/sobjects/Contact/deleted", ours("get_deleted_invalid_replication_date.json")
    )
    served.replay.add("GET", f"{V}/queryAll", ours("query_short_batch_page2.json"))
    recent = str(int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp() * 1000))
    state = StreamState(cursor="2024-01-01T00:00:00.000+0000", extra={"covered": recent})
    page = served.connector().read_page("Contact", state, 100, FIELDS)
    assert page.reconcile == UNAVAILABLE and len(page.records) == 2


@pytest.mark.parametrize("refusal", ["bulk_create_limit_exceeded.json", "bulk_create_invalidentity.json"])
def test_a_refused_bulk_job_is_read_over_rest(served: Served, refusal: str) -> None:
    _describe(served)
    served.replay.add("POST", f"{V}/jobs/query", ours(refusal))
    served.replay.add("GET", f"{V}/query", ours("query_short_batch_page2.json"))
    res = _full_bulk_read(served)
    assert [r["LastName"] for r in res.records] == ["Di", "Ed"]
    assert served.replay.count("POST", f"{V}/jobs/query") == 1  # refused once, not retried


def test_a_failed_ordered_job_is_followed_by_an_unordered_one_whose_rows_come_in_any_order(
    served: Served,
) -> None:
    _describe(served)
    served.replay.add("POST", f"{V}/jobs/query", ours("bulk_job_created.json"))
    served.replay.add("GET", f"{V}/jobs/query/7505d00000AbCdEAAZ", ours("bulk_job_failed_query_timeout.json"))
    served.replay.add("DELETE", f"{V}/jobs/query/", Reply(204, b""))
    res_created = ours("bulk_job_created.json")
    served.replay.add(
        "POST", f"{V}/jobs/query", res_created, Reply(200, res_created.body.replace(b"AbCdE", b"AbCdF"))
    )
    served.replay.add("GET", f"{V}/jobs/query/7505d00000AbCdFAAZ", ours("bulk_job_complete.json"))
    served.replay.add(
        "GET", f"{V}/jobs/query/7505d00000AbCdFAAZ/results", ours("bulk_results_unordered.json")
    )
    res = _full_bulk_read(served)
    assert sorted(r["LastName"] for r in res.records) == ["Ada", "Bea", "Cy"]
    assert (res.final_state.cursor, res.final_state.tie_break) == (
        "2024-01-01T00:00:03.000+0000",
        "0035d0000000003AAA",
    )
    posts = [q for m, p, q in served.replay.log if m == "POST"]
    assert len(posts) == 2 and served.replay.count("DELETE", f"{V}/jobs/query/") == 2  # both jobs deleted


def test_composite_delete_results_map_one_outcome_per_id(served: Served) -> None:
    served.replay.add("DELETE", f"{V}/composite/sobjects", ours("composite_delete_results.json"))
    ids = ["00Q5d0000000001AAA", "00Q5d0000000002AAA", "00Q5d0000000003AAA"]
    res = served.connector().write_batch("Lead", [{"Id": i} for i in ids], WriteMode.DELETE, external_id="Id")
    assert [(o.status, o.error_code) for o in res.outcomes] == [
        (OutcomeStatus.DELETED, None),
        (OutcomeStatus.DELETED, None),  # already in the recycle bin: a retried delete
        (OutcomeStatus.FAILED, "INSUFFICIENT_ACCESS_OR_READONLY"),
    ]
    ((_, _, query),) = served.replay.log
    assert parse_qs(query) == {"ids": [",".join(ids)], "allOrNone": ["false"]} and res.calls == 1


# -- shared/vendor-fixtures -------------------------------------------------------------------------


def test_the_recorded_describe_is_a_stream_schema(served: Served) -> None:
    _describe(served)
    fields = {f.name: f for f in served.connector().describe("Contact").fields}
    assert fields["MasterRecordId"].type == "reference" and not fields["MasterRecordId"].writable
    assert fields["MailingAddress"].is_compound and fields["MailingCity"].compound == "MailingAddress"
    assert fields["SystemModstamp"].type == "datetime" and fields["Id"].type == "id"


@pytest.mark.parametrize(
    "page1",
    ["query_page1_done_false.simple_salesforce.json", "queryall_page1_done_false.simple_salesforce.json"],
)
def test_an_absolute_next_records_url_is_refused_not_followed(served: Served, page1: str) -> None:
    # SOURCES.md: simple-salesforce's test data has an absolute nextRecordsUrl (https://example.com/...);
    # real Salesforce sends a server-relative path. Following it would send the token to another host.
    _describe(served)
    served.replay.add("GET", f"{V}/query", shared(page1))
    served.replay.add("GET", f"{V}/queryAll", shared(page1))
    conn = served.connector()
    with pytest.raises(TransientError) as err:
        conn.read_page("Contact", StreamState(mode=ReadMode.FULL), 10, FIELDS)
    assert err.value.code == "MALFORMED_RESPONSE"
    assert all(not p.startswith("/query/next") for _, p, _ in served.replay.log)


def test_a_bulk_listing_ends_on_a_missing_sforce_locator(served: Served) -> None:
    # SOURCES.md: simple-salesforce's results fixture sends Sforce-Query-Locator: ""; the API (and the
    # library) use Sforce-Locator, missing or "null" at the end: the listing must end, not loop.
    served.replay.add("POST", f"{V}/jobs/query", shared("bulk2_query_job_create.airbyte.json"))
    served.replay.add(
        "GET",
        f"{V}/jobs/query/750Tn000004ZoR3IAK",
        shared("bulk2_query_job_status_complete.simple_salesforce.json"),
    )
    served.replay.add(
        "GET",
        f"{V}/jobs/query/750Tn000004ZoR3IAK/results",
        shared(
            "bulk2_query_results.simple_salesforce.csv",
            200,
            "text/csv",
            **{"Sforce-NumberOfRecords": "4", "Sforce-Query-Locator": ""},
        ),
    )
    served.replay.add("DELETE", f"{V}/jobs/query/750Tn000004ZoR3IAK", Reply(204, b""))
    conn = served.connector(bulk_threshold=0)
    page = conn.list_ids("Contact", StreamState(), 50_000)
    assert page.ids == ["001xx000003DHP0AAO", "001xx000003DHP1AAO"] * 2 and not page.has_more
    assert served.replay.count("DELETE", f"{V}/jobs/query/") == 1  # and the job is deleted


@pytest.mark.parametrize(
    ("name", "status", "kind", "code"),
    [
        ("error_invalid_field.cumulusci.json", 400, InvalidField, "INVALID_FIELD"),
        ("error_malformed_query.captured.json", 400, DataError, "MALFORMED_QUERY"),
        ("error_request_limit_exceeded.captured.json", 403, RateLimited, "REQUEST_LIMIT_EXCEEDED"),
        ("error_invalid_session_id.captured.json", 401, AuthError, "INVALID_SESSION_ID"),
    ],
)
def test_recorded_error_bodies_map_to_the_error_tree(
    served: Served, name: str, status: int, kind: type[Exception], code: str
) -> None:
    _describe(served)
    served.replay.add("GET", f"{V}/queryAll", shared(name, status))
    tokens = StaticTokens()
    with pytest.raises(kind) as err:  # an INVALID_FIELD is re-described and retried once, then raised
        served.connector(tokens).read_page("Contact", StreamState(), 10, FIELDS)
    assert getattr(err.value, "code", None) == code
    if status == 401:
        assert tokens.refreshes == 1  # one refresh, then the error
    if name.startswith("error_invalid_field"):
        assert isinstance(err.value, InvalidField) and err.value.field == "SetupOwnerId"


def test_recorded_collections_results_are_one_outcome_per_record(served: Served) -> None:
    import json

    request = json.loads(shared("composite_sobjects_upsert_contact.cumulusci.request.json").body)
    response = shared("composite_sobjects_upsert_contact.cumulusci.response.json")
    served.replay.add("POST", f"{V}/composite/sobjects", response)
    records = [{k: v for k, v in r.items() if k not in ("attributes", "Id")} for r in request["records"]]
    res = served.connector().write_batch("Contact", records, WriteMode.CREATE, external_id="External_Id__c")
    recorded = json.loads(response.body)
    assert [o.id for o in res.outcomes] == [r["id"] for r in recorded]
    assert [o.status for o in res.outcomes] == [OutcomeStatus.CREATED] * len(recorded) and res.calls == 1


@pytest.mark.parametrize(
    "usage", ["api-usage=18/5000", "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)"]
)
def test_recorded_limits_and_usage_header(served: Served, usage: str) -> None:
    limits = shared("limits.simple_salesforce.json")
    served.replay.add("GET", f"{V}/limits", Reply(200, limits.body, headers={"Sforce-Limit-Info": usage}))
    conn = served.connector()
    result = conn.check()
    assert result.ok and result.api_usage == "2/15000"  # from DailyApiRequests in the recorded body
    assert conn.api_usage == (int(usage.split("=")[1].split("/")[0]), 5000)  # from the header
