"""Smoke run of the Salesforce connector benchmark at small N (the harness is correct; no timing asserts)."""

from __future__ import annotations

import json

import pytest

from bench.salesforce_connector import main


def test_every_variant_pulls_each_seeded_contact_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--contacts", "2100", "--runs", "1"])  # main() exits non-zero on a lost or repeated record
    out = json.loads(capsys.readouterr().out)
    assert out["contacts"] == 2100
    # describe + 2 pages (a full read's first page counts it: no COUNT()); Bulk: describe, create,
    # 2 polls, 2 sets, and the job deleted once read (results retention)
    assert out["rest_incremental"]["api_calls"] == 3
    assert out["rest_full"]["api_calls"] == 3
    assert out["bulk_full"]["api_calls"] == 7
