"""The replay corpus: response shapes written down from HubSpot's docs and public reports
(tests/fixtures/vendor/hubspot, a SOURCE note in each) and the HubSpot files of
/work/shared/vendor-fixtures, served over HTTPS to the real connector, one test per shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.testing import read_all
from sandbox.tls import SandboxCA
from schemas.connector import OutcomeStatus, ReadMode, StreamState, WriteMode
from schemas.errors import AuthError, RateLimited
from tests.connectors.hubspot_replay import SHARED, Replay, load, replay

INCREMENTAL = StreamState(cursor="1714500000000", extra={})
Served = tuple[Replay, HubSpotConnector]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> SandboxCA:
    return SandboxCA.ensure(tmp_path_factory.mktemp("hubspot-replay-ca"))


def _serve(ca: SandboxCA, exchanges: list[dict[str, Any]], **config: Any) -> Iterator[Served]:
    yield from replay(ca, exchanges, **config)


def _done(state: Replay) -> None:
    assert not state.refused, state.refused
    assert not state.exchanges, f"{len(state.exchanges)} recorded answers never asked for"


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [str(r["id"]) for r in records]


# -- shapes written down from docs and reports --------------------------------------------------


def test_short_and_empty_search_pages_with_a_next_cursor(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("search_short_then_empty_pages.json"), search_rate_per_s=100.0):
        res = read_all(conn, "contacts", INCREMENTAL, page_size=200, fields=["email"], max_pages=10)
        assert _ids(res.records) == ["101", "102", "103"]  # ISO, ISO without ms, epoch ms: all ordered
        _done(state)
        assert len(state.received) == 4


def test_a_url_encoded_list_cursor_is_sent_back_encoded_once(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("list_encoded_cursor.json")):
        res = read_all(conn, "contacts", StreamState(mode=ReadMode.FULL), page_size=100, fields=["email"])
        assert _ids(res.records) == ["524", "525"]
        _done(state)


def test_a_daily_429_stops_until_the_reset(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("rate_limit_daily_429.json")):
        with pytest.raises(RateLimited) as err:
            conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 100, ["email"])
        assert err.value.code == "DAILY" and 0 < (err.value.retry_after or 0) <= 900
        _done(state)


def test_a_ten_secondly_429_without_retry_after_waits_the_learned_window(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("rate_limit_ten_secondly_429.json"), rate_limit_reserve=0.0):
        pauses: list[float] = []
        conn.client._sleep = pauses.append  # observe, do not wait
        first = conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 100, ["email"])
        conn.read_page("contacts", first.next_state, 100, ["email"])
        assert pauses and pauses[0] == 2.0  # the window the 200 reported (a 1 s guess would 429 again)
        assert len(state.received) == 3
        _done(state)


def test_a_batch_refused_for_a_non_midnight_date_is_converted_and_resent_once(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("invalid_date_not_midnight_400.json")):
        rec = {"email": "t@example.com", "trial_end_date": "1606768561954"}
        res = conn.write_batch("contacts", [rec], WriteMode.UPSERT, external_id="email")
        assert [o.status for o in res.outcomes] == [OutcomeStatus.CREATED] and res.calls == 3
        _done(state)


def test_a_batch_create_answered_200(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("batch_create_200.json")):
        recs = [{"email": "n1@example.com"}, {"email": "n2@example.com"}]
        res = conn.write_batch("contacts", recs, WriteMode.CREATE, external_id="email")
        assert [(o.status, o.id) for o in res.outcomes] == [
            (OutcomeStatus.CREATED, "801"),
            (OutcomeStatus.CREATED, "802"),
        ]
        _done(state)


def test_a_merged_record_reports_its_merged_ids_and_an_archive_its_delete(ca: SandboxCA) -> None:
    for state, conn in _serve(ca, load("merged_record_search.json"), merges_as_deletes=True):
        res = read_all(conn, "contacts", INCREMENTAL, page_size=200, fields=["email"])
        assert _ids(res.records) == ["9001"]
        assert sorted(res.deleted_ids) == ["650", "701", "702"]
        _done(state)


# -- /work/shared/vendor-fixtures/hubspot, replayed from where they are --------------------------


def _shared(name: str) -> Any:
    return json.loads((SHARED / name).read_text())


def test_shared_simple_public_object_and_next_page(ca: SandboxCA) -> None:
    """The spec's SimplePublicObject (a date property as epoch ms) on a page whose paging is the
    spec's NextPage example (a URL-encoded cursor), then a last page."""
    record = _shared("object_simple_public_object.example.hubspot_spec.json")
    paging = _shared("paging_next_page.example.hubspot_spec.json")
    exchanges = [
        {
            "method": "GET",
            "path": "/crm/v3/objects/contacts",
            "status": 200,
            "body": {"results": [record], "paging": {"next": paging}},
        },
        {
            "method": "GET",
            "path": "/crm/v3/objects/contacts",
            "status": 200,
            "expect_query": "after=NTI1Cg%3D%3D",
            "body": {"results": []},
        },
    ]
    for state, conn in _serve(ca, exchanges):
        res = read_all(
            conn, "contacts", StreamState(mode=ReadMode.FULL), page_size=100, fields=["property_date"]
        )
        assert _ids(res.records) == ["512"] and res.records[0]["property_date"] == "1572480000000"
        _done(state)


def test_shared_expired_token_401_refreshes_once(ca: SandboxCA) -> None:
    body = _shared("error_401_expired_authentication.captured.json")
    ok: dict[str, list[object]] = {"results": []}
    exchanges = [
        {"method": "GET", "path": "/crm/v3/objects/contacts", "status": 401, "body": body},
        {"method": "GET", "path": "/crm/v3/objects/contacts", "status": 200, "body": ok},
        {"method": "GET", "path": "/crm/v3/objects/contacts", "status": 401, "body": body},
        {"method": "GET", "path": "/crm/v3/objects/contacts", "status": 401, "body": body},
    ]
    for state, conn in _serve(ca, exchanges):
        assert conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 10, ["email"]).records == []
        with pytest.raises(AuthError) as err:
            conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 10, ["email"])
        assert err.value.code == "EXPIRED_AUTHENTICATION"
        _done(state)


def test_shared_batch_207_object_not_found_maps_to_each_input(ca: SandboxCA) -> None:
    """The captured 207 (found records + one OBJECT_NOT_FOUND error naming the missing e-mails),
    replayed as the answer to an update by e-mail: one outcome per input, matched by e-mail."""
    body = _shared("batch_read_by_email_207_object_not_found.captured.json")
    emails = ["admin-changeme@valmi.io", "raj+1@valmi.io", "raj@valmi.io", "raj+3@valmi.io", "raj+2@valmi.io"]
    exchanges = [
        {"method": "POST", "path": "/crm/v3/objects/contacts/batch/update", "status": 207, "body": body}
    ]
    for state, conn in _serve(ca, exchanges):
        res = conn.write_batch(
            "contacts",
            [{"email": e, "firstname": "X"} for e in emails],
            WriteMode.UPDATE,
            external_id="email",
        )
        assert [o.status for o in res.outcomes] == [OutcomeStatus.UPDATED] * 3 + [OutcomeStatus.FAILED] * 2
        assert {o.error_code for o in res.failed} == {"OBJECT_NOT_FOUND"} and res.calls == 1
        _done(state)


def test_shared_validation_error_without_problems_fails_the_record(ca: SandboxCA) -> None:
    body = _shared("error.example.hubspot_spec.json")
    exchanges = [
        {"method": "POST", "path": "/crm/v3/objects/contacts/batch/upsert", "status": 400, "body": body}
    ]
    for state, conn in _serve(ca, exchanges):
        res = conn.write_batch(
            "contacts", [{"email": "v@example.com"}], WriteMode.UPSERT, external_id="email"
        )
        assert [(o.status, o.error_code) for o in res.outcomes] == [
            (OutcomeStatus.FAILED, "VALIDATION_ERROR")
        ]
        _done(state)


def test_shared_property_definition_describes_a_field(ca: SandboxCA) -> None:
    prop = _shared("property.example.hubspot_spec.json")
    exchanges = [
        {"method": "GET", "path": "/crm/v3/properties/contacts", "status": 200, "body": {"results": [prop]}}
    ]
    for state, conn in _serve(ca, exchanges):
        schema = conn.describe("contacts")
        (spec,) = schema.fields
        assert spec.name == prop["name"] and spec.type == prop["type"]
        _done(state)
