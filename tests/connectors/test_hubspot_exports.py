"""Full reads through HubSpot's Exports API (connectors.hubspot.exports) against the sandbox portal:
the same records as the list API, exactly once, across connectors and broken downloads, and a
fall back to the list API whenever an export cannot serve the read."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.client import ExportFile
from connectors.hubspot.config import EXPORT_SCOPE
from connectors.hubspot.exports import _rows
from sandbox.faults import FaultPlan, FaultRule
from sandbox.tls import SandboxCA
from schemas.connector import Page, ReadMode, Record, StreamState
from schemas.errors import TransientError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import SandboxTokens, portal
from tests.sandbox.hubspot_support import Served

N = 230
FIELDS = ["email", "firstname", "lastname", "city", "phone"]
EXPORT_TOKEN_SCOPE = f"crm.objects.contacts.read crm.objects.contacts.write {EXPORT_SCOPE}"

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]


@pytest.fixture
def served(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": N})


def exporting(connect: Connect, served: Served, **overrides: Any) -> HubSpotConnector:
    """A connector whose connection was granted crm.export (token and config), threshold 100."""
    options: dict[str, Any] = {
        "granted_scopes": (EXPORT_SCOPE,),
        "export_threshold": 100,
        "export_poll_s": 0.05,
    }
    options.update(overrides)
    return connect(served, SandboxTokens(served.hs, EXPORT_TOKEN_SCOPE), **options)


def read_all(
    conn: HubSpotConnector, state: StreamState | None = None, size: int = 50, limit: int = 1000
) -> tuple[list[Record], StreamState, list[Page]]:
    state = state or StreamState(mode=ReadMode.FULL)
    records: list[Record] = []
    pages: list[Page] = []
    for _ in range(limit):
        page = conn.read_page("contacts", state, size, FIELDS)
        pages.append(page)
        records += page.records
        state = page.next_state
        if not page.has_more:
            return records, state, pages
    raise AssertionError("the read did not end")


def read_some(conn: HubSpotConnector, at_least: int) -> tuple[list[Record], StreamState]:
    """The first pages of 50 of a full read, until ``at_least`` records came; the read goes on."""
    state = StreamState(mode=ReadMode.FULL)
    got: list[Record] = []
    while len(got) < at_least:
        page = conn.read_page("contacts", state, 50, FIELDS)
        assert page.has_more
        got += page.records
        state = page.next_state
    return got, state


def by_id(records: list[Record]) -> dict[str, Record]:
    out = {str(r["id"]): r for r in records}
    assert len(out) == len(records), "a record was delivered twice"
    return out


def test_export_read_delivers_what_the_list_api_does(served: Served, connect: Connect) -> None:
    served.hs.update_record("contacts", next(iter(served.hs.store.dump("contacts"))).id, {"city": None})
    listed, list_state, list_pages = read_all(connect(served))
    exported, state, pages = read_all(exporting(connect, served))

    assert len(listed) == N
    assert by_id(exported) == by_id(listed)  # every property, nulls included
    assert [t.status for t in served.hs.export_tasks()] == ["COMPLETE"]
    assert served.hs.export_tasks()[0].rows == N
    # one count, one start, a status poll or two, one download — however many pages the read takes
    assert 4 <= sum(p.calls for p in pages) <= 6 and len(pages) == len(list_pages) == 5
    assert all(len(p.records) <= 50 for p in pages)
    again, _, small_pages = read_all(exporting(connect, served), size=10)
    assert by_id(again) == by_id(listed) and len(small_pages) == 24
    assert 4 <= sum(p.calls for p in small_pages) <= 6
    # the read ends as a list read does: positioned at its window's end, no export state left over
    assert state.cursor is not None and state.window_end is None and state.page_token is None
    assert not any(k.startswith("export") for k in state.extra)
    assert set(state.extra) == set(list_state.extra)


def test_small_objects_and_connections_without_the_scope_use_the_list_api(
    served: Served,
    connect: Connect,
) -> None:
    records, _, _ = read_all(exporting(connect, served, export_threshold=N + 1))
    assert len(by_id(records)) == N
    records, _, pages = read_all(connect(served, export_threshold=1))  # scope not granted
    assert len(by_id(records)) == N
    assert sum(p.calls for p in pages) == 5  # 50 a call, list calls only: not even a count
    assert served.hs.export_tasks() == []


def test_a_refused_scope_falls_back_to_the_list_api(
    served: Served,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection row says crm.export, but HubSpot says the token lacks it (a reinstall without
    it): the read goes on through the list API and says why."""
    caplog.set_level(logging.WARNING)
    conn = connect(served, granted_scopes=(EXPORT_SCOPE,), export_threshold=1)
    records, state, _ = read_all(conn)
    assert len(by_id(records)) == N
    assert served.hs.export_tasks() == []
    assert "crm.export not granted" in caplog.text
    assert not any(k.startswith("export") for k in state.extra)


def test_a_new_connector_resumes_the_same_export_where_the_last_one_stopped(
    served: Served,
    connect: Connect,
) -> None:
    first = exporting(connect, served)
    got, state = read_some(first, 100)  # two pages of 50 (a count, a start, polls and a download)
    first.close()
    served.hs.expire_export_links()  # the first link is dead: the next connector asks for a new one

    rest, _, _ = read_all(exporting(connect, served), state)
    assert len(by_id(got + rest)) == N
    assert len(served.hs.export_tasks()) == 1  # the same export, not a second one


def test_a_state_past_the_end_of_its_export_falls_back_to_the_list_api(
    served: Served,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resumed read whose state says more rows were delivered than the export's file holds (a
    state from elsewhere, or a file HubSpot changed): nothing can be trusted, so the read starts over
    through the list API and says why."""
    caplog.set_level(logging.WARNING)
    first = exporting(connect, served)
    _, state = read_some(first, 100)
    first.close()
    beyond = state.model_copy(update={"extra": {**state.extra, "export_rows": str(N + 5)}})

    records, end, _ = read_all(exporting(connect, served), beyond)
    assert len(by_id(records)) == N
    assert "fewer rows than were read from it" in caplog.text
    assert not any(k.startswith("export") for k in end.extra)
    assert len(served.hs.export_tasks()) == 1


def test_a_download_that_breaks_off_is_resumed_from_the_last_page(
    served: Served,
    connect: Connect,
) -> None:
    conn = exporting(connect, served)
    got, state = read_some(conn, 50)
    served.hs.faults.set_plan(FaultPlan(rules=[FaultRule(endpoint="hs.exports.download", drop=1.0)]))
    conn.close()  # the open download is gone; the next read downloads again, and that one drops
    fresh = exporting(connect, served)
    with pytest.raises(TransientError):
        fresh.read_page("contacts", state, 50, FIELDS)
    served.hs.faults.set_plan(FaultPlan())
    rest, _, _ = read_all(fresh, state)  # the activity's retry: from the last delivered page
    assert len(by_id(got + rest)) == N


def test_an_export_still_being_written_gives_empty_pages_until_it_is_done(
    served: Served,
    connect: Connect,
) -> None:
    served.hs.set_export_timing(queue_delay_s=0.6)
    conn = exporting(connect, served, export_wait_per_read_s=0.1)
    records, _, pages = read_all(conn)
    assert len(by_id(records)) == N
    assert any(not p.records and p.has_more for p in pages)  # waited, said so, read again


def test_a_partitioned_export_falls_back_to_the_list_api(
    hs_ca: SandboxCA,
    connect: Connect,
) -> None:
    for served in portal(hs_ca, {"contacts": N}, export_partition_rows=100):
        conn = exporting(connect, served)
        records, state, _ = read_all(conn)
        conn.close()  # before the portal stops
        assert len(by_id(records)) == N
        assert not any(k.startswith("export") for k in state.extra)
        assert [t.status for t in served.hs.export_tasks()] == ["COMPLETE"]


def test_first_incremental_read_backfills_through_an_export_then_searches(
    served: Served,
    connect: Connect,
) -> None:
    conn = exporting(connect, served)
    records, state, _ = read_all(conn, StreamState())
    assert len(by_id(records)) == N
    assert state.cursor is not None and not any(k.startswith("export") for k in state.extra)
    changed = list(served.hs.store.dump("contacts"))[5].id
    served.hs.update_record("contacts", changed, {"city": "Ghent"})
    again, _, _ = read_all(conn, state)
    assert [r["id"] for r in again] == [changed]
    assert len(served.hs.export_tasks()) == 1


def test_a_canceled_export_or_a_lost_task_falls_back_to_the_list_api(
    served: Served,
    connect: Connect,
) -> None:
    served.hs.set_export_timing(queue_delay_s=30.0)
    conn = exporting(connect, served, export_wait_per_read_s=0.05)
    waiting = conn.read_page("contacts", StreamState(mode=ReadMode.FULL), 50, FIELDS)
    assert waiting.records == [] and waiting.has_more and "export_task" in waiting.next_state.extra
    served.hs.close_exports()  # HubSpot cancels it
    served.hs.set_export_timing()
    records, state, _ = read_all(conn, waiting.next_state)
    assert len(by_id(records)) == N
    assert [t.status for t in served.hs.export_tasks()] == ["CANCELED"]
    assert not any(k.startswith("export") for k in state.extra)

    lost = waiting.next_state.model_copy(update={"extra": {"export_task": "987654321", "export_rows": "0"}})
    records, _, _ = read_all(exporting(connect, served), lost)
    assert len(by_id(records)) == N


def test_the_daily_export_limit_falls_back_to_the_list_api(
    served: Served,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served.hs.set_export_limit(1)
    first, _, _ = read_all(exporting(connect, served))
    caplog.set_level(logging.WARNING)
    second, _, _ = read_all(exporting(connect, served))
    assert len(by_id(first)) == len(by_id(second)) == N
    assert len(served.hs.export_tasks()) == 1
    assert "export rate-limited" in caplog.text


def _parse(data: bytes) -> list[Record]:
    return list(_rows(ExportFile(io.BytesIO(data), "text/csv")))


def test_the_csv_parser_reads_what_a_hubspot_export_file_holds() -> None:
    data = (
        "\ufeffhs_object_id,email,notes,city\r\n"  # a byte-order mark, as spreadsheet-minded exports carry
        '7,a@example.test,"two\r\nlines, ""quoted""",\r\n'
        "8,b@example.test,,Łódź\r\n"
    ).encode()
    assert _parse(data) == [
        {
            "hs_object_id": "7",
            "email": "a@example.test",
            "notes": 'two\r\nlines, "quoted"',
            "city": None,
            "id": "7",
        },
        {"hs_object_id": "8", "email": "b@example.test", "notes": None, "city": "Łódź", "id": "8"},
    ]
    labels = _parse(b"Record ID,First Name\r\n9,Ada\r\n")  # headers as labels (no NAMES option)
    assert labels == [{"First Name": "Ada", "id": "9"}]
    assert _parse(b"") == []


def test_a_file_without_ids_or_with_a_torn_row_is_refused() -> None:
    with pytest.raises(TransientError, match="no record id column"):
        _parse(b"email\r\na@example.test\r\n")
    with pytest.raises(ValueError, match="cell count"):
        _parse(b"hs_object_id,email\r\n7\r\n")
