"""HubSpot reads beyond the contract: more than 10,000 changes in one window (the search API's
per-query cap), incremental over search = full, deletes reported once, an incremental read after a
full one, reads that end while records keep changing, and the search rate limit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from connectors.hubspot import HubSpotConnector
from connectors.testing import read_all
from sandbox.tls import SandboxCA
from schemas.connector import ReadMode, StreamState
from schemas.errors import ConfigError
from tests.connectors import hubspot_harness
from tests.connectors.hubspot_harness import portal
from tests.sandbox.hubspot_support import Served

hs_ca = hubspot_harness.hs_ca
connect = hubspot_harness.connect
Connect = Callable[..., HubSpotConnector]
FIELDS = ["email", "city"]


@pytest.fixture
def small(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 250})


@pytest.fixture
def big(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 12_000})


@pytest.fixture
def search_limited(hs_ca: SandboxCA) -> Iterator[Served]:
    yield from portal(hs_ca, {"contacts": 120}, search_per_second=4)


def _ids(records: list[dict[str, object]]) -> list[str]:
    return [str(r["hs_object_id"]) for r in records]


@pytest.mark.parametrize("spread_ms", [1, 7], ids=["one-timestamp", "seven-timestamps"])
def test_more_than_10k_changes_in_one_window_arrive_exactly_once(
    big: Served, connect: Connect, spread_ms: int
) -> None:
    hs = big.hs
    conn = connect(big)
    start = read_all(conn, "contacts", StreamState(), page_size=100, fields=FIELDS)
    assert len(start.records) == 12_000  # the first read lists (no search cap involved)
    ids = sorted(r.id for r in hs.store.dump("contacts"))
    base = hs.store.clock.now_ms() + 5
    for k, record_id in enumerate(ids):  # 12,000 changes on 1 or 7 adjacent milliseconds
        hs.store.clock.freeze(base + k % spread_ms)
        hs.update_record("contacts", record_id, {"city": f"Changed {k}"})
    hs.store.clock.unfreeze()
    hs.calls.clear()
    while hs.store.clock.now_ms() <= base + spread_ms:  # the next window must cover the changes
        pass
    after = read_all(conn, "contacts", start.final_state, page_size=200, fields=FIELDS, max_pages=500)
    got = Counter(_ids(after.records))
    assert set(got) == set(ids), "a changed record was lost"
    assert max(got.values()) == 1, "a changed record was delivered twice"
    assert all(str(r["city"]).startswith("Changed") for r in after.records)
    calls = hs.calls.all()
    assert {c.status for c in calls} == {200}, "a search went past the 10,000-result cap"
    assert sum(c.endpoint == "hs.search.contacts" for c in calls) <= 12_000 // 200 + 2 * spread_ms + 2


def test_incremental_over_search_equals_full(small: Served, connect: Connect) -> None:
    hs = small.hs
    hs.store.clock.freeze()
    for record_id in sorted(r.id for r in hs.store.dump("contacts"))[100:120]:  # a tie group of 20
        hs.update_record("contacts", record_id, {"city": "Tied"})
    hs.store.clock.unfreeze()
    conn = connect(small)
    full = read_all(conn, "contacts", StreamState(mode=ReadMode.FULL), page_size=100, fields=FIELDS)
    # A cursor (here: the epoch) makes the read use search; seeded records share timestamps in threes.
    inc = read_all(conn, "contacts", StreamState(cursor="0"), page_size=7, fields=FIELDS)
    assert sorted(_ids(inc.records)) == sorted(_ids(full.records))
    assert len(set(_ids(inc.records))) == len(inc.records) == 250
    phases = Counter(s.extra.get("phase") for s in inc.states)
    assert phases["ties"] > 0, "a tie group larger than a page is drained by id"
    assert inc.final_state.window_end is None and "phase" not in inc.final_state.extra


def test_deletes_are_reported_once_and_only_when_asked(small: Served, connect: Connect) -> None:
    hs = small.hs
    conn = connect(small)
    first = read_all(conn, "contacts", StreamState(), page_size=100, fields=FIELDS)
    assert first.deleted_ids == []  # a first read has nothing to delete downstream
    victims = sorted(r.id for r in hs.store.dump("contacts"))[10:13]
    for v in victims:
        hs.delete_record("contacts", v)
    second = read_all(conn, "contacts", first.final_state, page_size=100, fields=FIELDS)
    assert sorted(second.deleted_ids) == victims
    third = read_all(conn, "contacts", second.final_state, page_size=100, fields=FIELDS)
    assert third.deleted_ids == [] and third.records == []
    quiet = third.final_state.model_copy(update={"include_deleted": False})
    page = conn.read_page("contacts", quiet, 100, FIELDS)
    assert (page.has_more, page.calls) == (False, 1)  # no archive scan without include_deleted


def test_a_full_read_leaves_the_position_an_incremental_read_continues_from(
    small: Served, connect: Connect
) -> None:
    hs = small.hs
    conn = connect(small)
    full = read_all(conn, "contacts", StreamState(mode=ReadMode.FULL), page_size=100, fields=FIELDS)
    assert len(full.records) == 250
    end = full.final_state
    assert end.cursor is not None and end.window_end is None and end.page_token is None
    while hs.store.clock.now_ms() <= int(end.cursor):  # the changes come after the full read
        pass
    ids = sorted((r.id for r in hs.store.dump("contacts")), key=int)
    for record_id in ids[:4]:
        hs.update_record("contacts", record_id, {"city": "Moved"})
    for record_id in ids[4:6]:
        hs.delete_record("contacts", record_id)
    since = end.model_copy(update={"mode": ReadMode.INCREMENTAL})
    inc = read_all(conn, "contacts", since, page_size=100, fields=FIELDS)
    assert sorted(_ids(inc.records), key=int) == ids[:4]  # the changes, not the whole object again
    assert sorted(inc.deleted_ids, key=int) == ids[4:6]


def test_reads_end_at_the_window_while_records_keep_changing(small: Served, connect: Connect) -> None:
    hs = small.hs
    conn = connect(small)
    state = StreamState(cursor="0")
    seen: list[str] = []
    for _ in range(1000):
        page = conn.read_page("contacts", state, 20, FIELDS)
        seen += _ids(page.records)
        for record_id in _ids(page.records)[:3]:  # changed again: now newer than the window end
            hs.update_record("contacts", record_id, {"city": "Again"})
        state = page.next_state
        if not page.has_more:
            break
    assert not page.has_more
    assert len(seen) == len(set(seen)) == 250
    nxt = read_all(conn, "contacts", state, page_size=100, fields=FIELDS)
    assert {r["city"] for r in nxt.records} == {"Again"}  # the next read picks up what changed


def test_search_rate_limit_is_respected(search_limited: Served, connect: Connect) -> None:
    hs = search_limited.hs
    conn = connect(search_limited, search_rate_per_s=4.0)
    res = read_all(conn, "contacts", StreamState(cursor="0"), page_size=10, fields=FIELDS)
    assert len(res.records) == 120
    searches = sorted(c.at for c in hs.calls.all() if c.endpoint == "hs.search.contacts")
    assert len(searches) >= 12
    assert all(c.status != 429 for c in hs.calls.all())
    # at most 4 arrivals in any one-second window (the sandbox's own rule, from its call log)
    busiest = max(sum(1 for t in searches[i:] if t < start + 1.0) for i, start in enumerate(searches))
    assert busiest <= 4


def test_unknown_stream_and_bad_cursor_are_config_errors(small: Served, connect: Connect) -> None:
    conn = connect(small)
    with pytest.raises(ConfigError, match="unknown HubSpot stream"):
        conn.read_page("tickets", StreamState(), 10, FIELDS)
    with pytest.raises(ConfigError, match="cursor"):
        conn.read_page("contacts", StreamState(cursor="yesterday"), 10, FIELDS)
    iso = conn.read_page("contacts", StreamState(cursor="2020-01-01T00:00:00Z"), 10, FIELDS)
    assert iso.records and iso.next_state.cursor is not None and iso.next_state.cursor.isdigit()
