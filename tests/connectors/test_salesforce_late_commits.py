"""Late-committed rows (issue 13 item 3): a long transaction commits rows stamped before rows already
read; the overlap window delivers them, exactly once, with a bounded state and bounded calls.

Everything runs through the real connector (simple-salesforce over HTTPS to the sandbox), with
REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE pointing at the system bundle as on a real host.
"""

from __future__ import annotations

import pathlib
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from connectors.salesforce.overlap import Seen
from connectors.testing import ReadResult, read_all
from schemas.connector import StreamState
from tests.connectors import salesforce_harness
from tests.connectors.salesforce_harness import SYSTEM_BUNDLE, Org, required

sf_ca = salesforce_harness.sf_ca
org = salesforce_harness.org

pytestmark = pytest.mark.integration

FIELDS = ["LastName", "Email"]


@pytest.fixture(autouse=True)
def _system_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if pathlib.Path(SYSTEM_BUNDLE).exists():
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
        monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)


def _pairs(res: ReadResult) -> list[tuple[str, str]]:
    return [(str(r["Id"]), str(r["SystemModstamp"])) for r in res.records]


def _new(org: Org) -> dict[str, object]:
    return required("Contact", uuid.uuid4().hex[:12])


def test_a_row_committed_late_with_an_older_stamp_arrives_once_and_nothing_twice(org: Org) -> None:
    conn = org.connector()
    naive = org.connector(overlap_s=0)
    start = read_all(conn, "Contact", StreamState(), page_size=100, fields=FIELDS)
    naive_start = read_all(naive, "Contact", StreamState(), page_size=100, fields=FIELDS)
    clock, t0 = org.sb.store.clock, int(time.time() * 1000)
    clock.freeze(t0)
    tx = org.sb.long_transaction()  # begins at t0: its row is stamped t0 ...
    slow = tx.create_record("Contact", _new(org))
    clock.freeze(t0 + 5_000)
    fast = org.sb.create_record("Contact", _new(org))  # ... a quick write commits at t0 + 5 s
    mid = read_all(conn, "Contact", start.final_state, page_size=100, fields=FIELDS)
    naive_mid = read_all(naive, "Contact", naive_start.final_state, page_size=100, fields=FIELDS)
    assert [r["Id"] for r in mid.records] == [fast] == [r["Id"] for r in naive_mid.records]
    tx.commit()  # ... and the slow row becomes visible with its t0 stamp, behind both cursors
    org.sb.calls.clear()
    end = read_all(conn, "Contact", mid.final_state, page_size=100, fields=FIELDS)
    assert [r["Id"] for r in end.records] == [slow]  # delivered, and `fast` is not delivered again
    assert org.sb.calls.counts() == {"sf.deleted": 1, "sf.queryAll": 1}  # the check + one query
    assert read_all(naive, "Contact", naive_mid.final_state, page_size=100, fields=FIELDS).records == []
    again = read_all(conn, "Contact", end.final_state, page_size=100, fields=FIELDS)
    assert again.records == [] and again.pages == 1
    cursors = [(s.cursor or "", s.tie_break or "") for s in (*mid.states, *end.states, *again.states)]
    assert cursors == sorted(cursors)  # the cursor never moved backwards
    clock.unfreeze()


class _Reader:
    """One connector's incremental runs, and the (Id, SystemModstamp) pairs they delivered."""

    def __init__(self, org: Org, **overrides: Any) -> None:
        self.conn = org.connector(**overrides)
        self.state = read_all(self.conn, "Contact", StreamState(), page_size=50, fields=FIELDS).final_state
        self.got: list[tuple[str, str]] = []
        self.runs = 0

    def run(self) -> None:
        res = read_all(self.conn, "Contact", self.state, page_size=50, fields=FIELDS)
        self.state = res.final_state
        self.got += _pairs(res)
        self.runs += 1


def test_the_late_commit_mode_loses_rows_without_the_window_and_none_with_it(org: Org) -> None:
    readers = _Reader(org), _Reader(org, overlap_s=0)
    clock, base = org.sb.store.clock, int(time.time() * 1000)
    created: list[str] = []
    org.sb.calls.clear()
    with org.sb.late.mode(every=3, delay_ms=20_000):  # every third write commits 20 s late
        for step in range(12):
            clock.freeze(base + step * 5_000)
            created += [org.sb.create_record("Contact", _new(org)) for _ in range(5)]
            for reader in readers:
                reader.run()
    clock.freeze(base + 12 * 5_000)  # the mode's end committed what was still held
    for _ in range(2):
        for reader in readers:
            reader.run()
    clock.unfreeze()
    windowed, naive = readers
    runs = windowed.runs
    assert len(windowed.got) == len(set(windowed.got))  # 0 duplicated
    assert Counter(rid for rid, _ in windowed.got) == Counter(created)  # 0 lost: every row once
    lost = set(created) - {rid for rid, _ in naive.got}
    assert lost  # without the window the held rows are passed by the cursor and lost
    calls = org.sb.calls.counts()
    # Per run of each of the two connectors: one getDeleted, at most two queries (more than one page).
    assert calls["sf.deleted"] == 2 * runs
    assert calls["sf.queryAll"] + calls.get("sf.query_more", 0) <= 2 * 2 * runs


def test_beyond_the_bound_the_window_repeats_the_oldest_rather_than_lose_a_late_commit(org: Org) -> None:
    """More changes in one window than ``overlap_max_ids``: the oldest pairs are forgotten and handed
    out again once per re-read — and a row a long transaction commits late *among them* still
    arrives (the floor this replaced skipped it: the full-N crash suite's lost late commit)."""
    conn = org.connector(overlap_max_ids=500)
    state = read_all(conn, "Contact", StreamState(), page_size=2000, fields=FIELDS).final_state
    clock, base = org.sb.store.clock, int(time.time() * 1000)
    clock.freeze(base + 50_000)
    tx = org.sb.long_transaction()  # stamped among the 1,500 below, committed after they are read
    slow = tx.create_record("Contact", _new(org))
    created = []
    for i in range(1500):  # 1,500 changes within one overlap window
        clock.freeze(base + i * 100)
        created.append(org.sb.create_record("Contact", _new(org)))
    clock.freeze(base + 200_000)
    res = read_all(conn, "Contact", state, page_size=2000, fields=FIELDS)
    assert sorted(r["Id"] for r in res.records) == sorted(created)  # the held row is not visible yet
    seen = Seen.load(res.final_state.extra)
    assert seen is not None and len(seen) == 500
    assert "seen_floor" not in res.final_state.extra
    assert len(res.final_state.model_dump_json()) < 500 * 20 + 1024  # 15-20 bytes a pair
    tx.commit()
    org.sb.calls.clear()
    after = read_all(conn, "Contact", res.final_state, page_size=2000, fields=FIELDS)
    got = [str(r["Id"]) for r in after.records]
    oldest = created[:1000]  # the pairs beyond the bound, forgotten: handed out again, each once
    assert sorted(got) == sorted([*oldest, slow]) and len(got) == len(set(got))
    assert set(got).isdisjoint(created[1000:])  # the 500 remembered are skipped
    assert org.sb.calls.counts() == {"sf.deleted": 1, "sf.queryAll": 1}
    clock.unfreeze()


def test_an_older_state_with_a_floor_re_reads_below_it_once(org: Org) -> None:
    """A state written by the floor version (``seen_floor``) is read as if the floor were absent."""
    conn = org.connector(overlap_max_ids=500)
    state = read_all(conn, "Contact", StreamState(), page_size=2000, fields=FIELDS).final_state
    clock, base = org.sb.store.clock, int(time.time() * 1000)
    created = []
    for i in range(20):
        clock.freeze(base + i * 100)
        created.append(org.sb.create_record("Contact", _new(org)))
    clock.freeze(base + 10_000)
    res = read_all(conn, "Contact", state, page_size=2000, fields=FIELDS)
    assert sorted(r["Id"] for r in res.records) == sorted(created)
    old = res.final_state.model_copy(
        update={"extra": {**res.final_state.extra, "seen_floor": f"{base + 1900}|{created[-1]}"}}
    )
    after = read_all(conn, "Contact", old, page_size=2000, fields=FIELDS)
    assert after.records == []  # every pair is still remembered: nothing repeats, nothing skipped
    assert "seen_floor" not in after.final_state.extra
    clock.unfreeze()
