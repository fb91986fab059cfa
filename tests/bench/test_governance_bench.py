"""Smoke run of the governance-core benchmark: the harness does the real work (not timed here)."""

from __future__ import annotations

from bench.governance_core import TENANT, _records, run
from governance.lineage import Ledger
from store.engine import make_engine


def test_harness_projects_seals_and_appends_lineage(db_url, tmp_path) -> None:
    records = _records(250)
    run(records, 100, db_url, tmp_path)
    engine = make_engine(db_url)
    ledger = Ledger(engine, TENANT)
    assert ledger.size() == 3  # one event per batch: 100 + 100 + 50
    events = ledger.read_events(0, 3)
    assert [e.counts["pulled"] for e in events] == [100, 100, 50]
    assert sum(len(e.record_id_hashes) for e in events) == 250
    assert all(h.startswith("kh_") for e in events for h in e.record_id_hashes)
    assert all(e.details["withheld_fields"] for e in events)  # Phone, Title... were withheld
    engine.dispose()
