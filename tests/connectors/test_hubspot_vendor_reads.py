"""HubSpot read behaviours of production portals (docs/VENDOR-FAITHFULNESS.md), driven through the
real connector over HTTPS: search pages that come back short or empty with a next cursor, list
cursors HubSpot hands out URL-encoded. Each test asserts the records (none lost, none twice) and
the calls it cost."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.testing import read_all
from sandbox.hubspot.quirks import Quirks
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
FIELDS = ["email", "city"]


@pytest.fixture
def stale_index(hs_ca: SandboxCA) -> Iterator[Served]:
    """300 contacts; records archived in the last hour still take their place in search pages."""
    yield from portal(hs_ca, {"contacts": 300}, quirks=Quirks(stale_search_hits_s=3600))


def _ids(records: list[dict[str, object]]) -> list[str]:
    return [str(r["hs_object_id"]) for r in records]


def _after(served: Served, ms: int) -> None:
    """Wait until the portal's clock has passed ``ms`` (the next read's window must cover it)."""
    served.hs.store.clock.unfreeze()
    while served.hs.store.clock.now_ms() <= ms:
        time.sleep(0.001)


def _searches(served: Served) -> list[int]:
    return [c.status for c in served.hs.calls.all() if c.endpoint == "hs.search.contacts"]


def test_an_empty_search_page_with_a_next_cursor_is_followed_not_a_crash(
    stale_index: Served, connect: Connect
) -> None:
    """Phase A: the first page of the window is all stale hits (empty, next set). Before: a raw
    ValueError from max() of an empty page, retried by the activity for ever."""
    hs, conn = stale_index.hs, connect(stale_index)
    start = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS).final_state
    ids = sorted((r.id for r in hs.store.dump("contacts")), key=int)
    t1 = hs.store.clock.now_ms() + 5
    hs.store.clock.freeze(t1)
    for record_id in ids[:220]:  # archived first: 220 stale hits ahead of the changes in the index
        assert hs.delete_record("contacts", record_id)
    hs.store.clock.freeze(t1 + 5)
    for record_id in ids[220:260]:
        assert hs.update_record("contacts", record_id, {"city": "Changed"})
    _after(stale_index, t1 + 5)
    hs.calls.clear()
    res = read_all(conn, "contacts", start, page_size=200, fields=FIELDS, max_pages=20)
    assert Counter(_ids(res.records)) == Counter(ids[220:260]), "a change was lost or repeated"
    assert sorted(res.deleted_ids, key=int) == ids[:220]
    # one empty page followed by its cursor, then the short page that ends the window
    assert _searches(stale_index) == [200, 200]
    assert len(hs.calls.all()) == 2 + 3  # + the archived list: 220 archived records, 100 a page


def test_an_empty_tie_page_with_a_next_cursor_advances_instead_of_looping(
    stale_index: Served, connect: Connect
) -> None:
    """Phase B (ties): 10 changes, 250 stale hits and 20 changes share one timestamp. Before: the
    ties phase got an empty page with a next cursor, kept its state and asked the same query for ever."""
    hs, conn = stale_index.hs, connect(stale_index)
    start = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS).final_state
    ids = sorted((r.id for r in hs.store.dump("contacts")), key=int)
    tied = hs.store.clock.now_ms() + 5
    hs.store.clock.freeze(tied)
    changed = ids[:10] + ids[260:280]
    for record_id in changed:
        assert hs.update_record("contacts", record_id, {"city": "Tied"})
    for record_id in ids[10:260]:
        assert hs.delete_record("contacts", record_id)
    _after(stale_index, tied)
    hs.calls.clear()
    res = read_all(conn, "contacts", start, page_size=200, fields=FIELDS, max_pages=20)
    assert Counter(_ids(res.records)) == Counter(changed), "a tied change was lost or repeated"
    assert sorted(res.deleted_ids, key=int) == ids[10:260]
    searches = _searches(stale_index)
    assert set(searches) == {200} and len(searches) <= 6, f"{len(searches)} searches for 30 changes"
    assert res.pages <= 6


def test_a_window_of_nothing_but_stale_hits_ends_with_bounded_calls(
    stale_index: Served, connect: Connect
) -> None:
    hs, conn = stale_index.hs, connect(stale_index)
    start = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS).final_state
    stamp = hs.store.clock.now_ms() + 5
    hs.store.clock.freeze(stamp)
    archived = sorted((r.id for r in hs.store.dump("contacts")), key=int)
    for record_id in archived:
        hs.delete_record("contacts", record_id)
    _after(stale_index, stamp)
    hs.calls.clear()
    res = read_all(conn, "contacts", start, page_size=200, fields=FIELDS, max_pages=10)
    assert res.records == [] and sorted(res.deleted_ids, key=int) == archived
    assert _searches(stale_index) == [200, 200]  # 300 stale hits: two empty pages, the last without next


@pytest.fixture
def encoded_cursors(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 250}, quirks=Quirks(encoded_list_cursors=True))


@pytest.mark.parametrize("mode", [ReadMode.FULL, ReadMode.INCREMENTAL])
def test_url_encoded_list_cursors_are_sent_back_once_encoded(
    encoded_cursors: Served, connect: Connect, mode: ReadMode
) -> None:
    """The spec's cursor form (``NTI1Cg%3D%3D``) passed through the SDK as it came would arrive
    encoded twice: the sandbox refuses that with a 400, as another cursor would be."""
    hs = encoded_cursors.hs
    hs.calls.clear()
    res = read_all(connect(encoded_cursors), "contacts", StreamState(mode=mode), page_size=100, fields=FIELDS)
    assert len(res.records) == len(set(_ids(res.records))) == 250
    calls = hs.calls.all()
    assert [c.status for c in calls] == [200, 200, 200]
    assert "%3D" in calls[1].target and "%25" not in calls[1].target


@pytest.fixture
def archive(hs_ca: SandboxCA) -> Iterator[Served]:
    """250 contacts, 200 of them archived long ago: every archive scan costs 2 calls + 1."""
    for served in portal(hs_ca, {"contacts": 250}):
        for record_id in range(1, 201):
            served.hs.delete_record("contacts", str(record_id))
        yield served


def test_the_archive_is_scanned_at_most_once_per_interval_and_nothing_is_lost(
    archive: Served, connect: Connect
) -> None:
    """The archived list cannot be filtered by time (it is re-read whole): between scans a read
    costs the search alone, and the next scan reports every archive since the last one."""
    hs, conn = archive.hs, connect(archive, archive_scan_interval_s=1.0)
    state = read_all(conn, "contacts", StreamState(), page_size=200, fields=FIELDS).final_state
    hs.delete_record("contacts", "230")
    _after(archive, hs.store.clock.now_ms())
    hs.calls.clear()
    inside = read_all(conn, "contacts", state, page_size=200, fields=FIELDS)
    assert inside.deleted_ids == [] and len(hs.calls.all()) == 1  # the search only: scan skipped
    hs.delete_record("contacts", "240")
    time.sleep(1.05)
    hs.calls.clear()
    after = read_all(conn, "contacts", inside.final_state, page_size=200, fields=FIELDS)
    assert sorted(after.deleted_ids) == ["230", "240"]
    assert [c.endpoint for c in hs.calls.all()] == ["hs.search.contacts"] + ["hs.list.contacts"] * 3
    hs.calls.clear()
    again = read_all(conn, "contacts", after.final_state, page_size=200, fields=FIELDS)
    assert again.deleted_ids == [] and len(hs.calls.all()) == 1
