"""Smoke run of the sync-overhead benchmark at small N: the harness copies every contact both ways,
counts the vendor calls and walks the whole continue-as-new chain of histories (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionStartedEventAttributes

from bench.sync_overhead import _payloads, main, minimum_calls, record_emails


def test_both_sides_land_every_contact_and_the_history_chain_is_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    n = 4100  # three Salesforce pages; one page per pull and continue-as-new after every batch
    tuning = [
        "--worker-setting",
        "pages_per_activity=1",
        "--worker-setting",
        "continue_as_new_after_batches=1",
    ]
    main(["--contacts", str(n), "--runs", "1", "--latency-ms", "0", *tuning])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # main exits on a count mismatch
    assert out["minimum_calls"] == {"salesforce_query_pages": 3, "hubspot_batch_upserts": 41}
    (row,) = out["latencies"]
    floor, crm = row["floor"], row["crmhub"]
    assert floor["calls"]["salesforce"] == {"sf.query": 1, "sf.query_more": 2}
    assert floor["calls"]["hubspot"] == {"hs.batch.upsert.contacts": 41}
    assert crm["calls"]["hubspot"] == {"hs.batch.upsert.contacts": 41}
    assert crm["salesforce_calls"] >= 3
    assert crm["batches"] == 3
    footprint = crm["temporal"]
    assert footprint["executions"] == 3  # followed continue-as-new from the first run to the last
    assert footprint["events_total"] >= 3 * footprint["executions"]
    assert 0 < footprint["largest_payload_bytes"] < 256 * 1024
    assert footprint["record_emails_in_history"] == 0
    assert crm["worker_peak_rss_mb"] > 0 and floor["peak_rss_mb"] > 0
    assert row["ratio"] > 0


def test_payloads_are_found_inside_events() -> None:
    event = HistoryEvent(
        workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
            input=Payloads(payloads=[Payload(data=b'{"email": "a@b.io"}'), Payload(data=b"x")])
        )
    )
    assert [p.data for p in _payloads(event)] == [b'{"email": "a@b.io"}', b"x"]
    assert record_emails(b'{"email": "A@b.io", "x": "c@d.io"}', {b"a@b.io"}) == {b"a@b.io"}
    assert minimum_calls(100_000) == {"salesforce_query_pages": 50, "hubspot_batch_upserts": 1000}


def test_the_faithful_phase_counts_late_commits_and_merges(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--contacts", "1000", "--runs", "1", "--latency-ms", "0", "--only", "crmhub", "--faithful",
          "--faithful-updates", "30"])  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # main exits on a mismatch
    assert out["faithful"] is True
    phase = out["faithful_incremental"]
    assert phase["held_when_the_first_run_started"] is True
    assert (phase["lost"], phase["extra"], phase["duplicated"], phase["stale_values"]) == (0, 0, 0, 0)
    assert phase["losers_at_destination"] == 0
    first, second = phase["runs"]
    assert first["pushed"] + second["pushed"] == 30 + 2  # every change once, late ones included
    assert first["deleted"] + second["deleted"] == 2
    assert phase["calls"]["hubspot"].get("hs.batch.archive.contacts", 0) <= 2
