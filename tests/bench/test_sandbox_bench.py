"""Smoke run of the sandbox paging benchmark at small N (correctness of the harness, not timing)."""

from __future__ import annotations

import json

from bench.sandbox_paging import main


def test_pages_every_seeded_contact_through_both_clients(capsys) -> None:
    main(["--contacts", "2500", "--runs", "1"])
    out = json.loads(capsys.readouterr().out)
    assert out["contacts"] == 2500
    assert out["salesforce_records_per_s"] > 0
    assert out["hubspot_records_per_s"] > 0
