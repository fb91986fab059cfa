"""Projection: only allowed fields leave, pseudonyms replace marked ones, withheld is counted; a blank
value of a pseudonymized field stays blank (regression found by tests/chaos/test_bad_input.py at full
size: an empty Salesforce Phone reached HubSpot as a ps_… value)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.policy import PlanRefused, ProcessingInstruction, project
from schemas.errors import ConfigError
from tests.governance.policy.support import PS, RECORD, instruction


def test_project_keeps_allowed_and_pseudonymizes() -> None:
    original = dict(RECORD)
    out = project(
        [RECORD, {"Id": "003A2", "Email": None, "Phone": "x"}], instruction(), "Contact", pseudonymizer=PS
    )
    assert original == RECORD  # input untouched
    first, second = out.records
    assert set(first) == {"Id", "Email", "FirstName", "LastName"}
    assert first["Email"] == PS.pseudonymize("acme", "alice@example.com")
    assert first["FirstName"] == "Alice"
    assert second == {"Id": "003A2", "Email": None}
    assert out.withheld_fields == ("Birthdate", "Phone")
    assert out.withheld_values == 3
    assert out.pseudonymized == {"Email": 1}
    summary = out.summary()
    assert summary["records"] == 2
    assert "alice" not in json.dumps(summary)


def test_project_requires_pseudonymizer_and_known_object() -> None:
    with pytest.raises(ConfigError, match="Pseudonymizer"):
        project([RECORD], instruction(), "Contact")
    with pytest.raises(PlanRefused) as info:
        project([RECORD], instruction(), "Lead", pseudonymizer=PS)
    assert info.value.reason["rule"] == "object"


field_names = st.sampled_from(["Id", "Email", "FirstName", "LastName", "Phone", "Birthdate", "SSN", "x"])
records = st.lists(st.dictionaries(field_names, st.one_of(st.none(), st.text(max_size=10), st.integers())))


# No per-example deadline: a wall-clock limit in a unit test fails on a loaded CI machine and proves
# nothing about correctness (speed is measured by bench/governance_core.py).
@settings(deadline=None)
@given(records=records)
def test_project_property(records: list[dict[str, Any]]) -> None:
    ins = instruction()
    allowed = set(ins.allowed_fields["Contact"])
    out = project(records, ins, "Contact", pseudonymizer=PS)
    assert len(out.records) == len(records)
    for src, dst in zip(records, out.records, strict=True):
        assert set(dst) == set(src) & allowed
        for k, v in dst.items():
            if k == "Email":  # an empty value stays empty: a pseudonym of "" would invent a value
                assert v == ("" if src[k] == "" else PS.pseudonymize("acme", src[k]))
            else:
                assert v == src[k]
    assert set(out.withheld_fields) == {k for r in records for k in r} - allowed
    assert out.withheld_values == sum(len(r) for r in records) - sum(len(r) for r in out.records)


def test_blank_values_are_not_pseudonymized() -> None:
    ins = ProcessingInstruction.model_validate(
        {
            "tenant": "acme",
            "version": 1,
            "purpose": "crm-sync",
            "data_categories": ["contact_details"],
            "allowed_fields": {"Contact": ["Id", "Phone"]},
            "pseudonymize": {"Contact": ["Phone"]},
            "retention_days": 7,
            "permitted_regions": ["eea"],
            "permitted_subprocessors": ["salesforce"],
            "valid_from": "2025-01-01T00:00:00Z",
        }
    )
    phones: list[Any] = ["", None, " "]
    records = [{"Id": str(i), "Phone": p} for i, p in enumerate(phones, 1)]
    out = project(records, ins, "Contact", pseudonymizer=PS)
    assert [r["Phone"] for r in out.records[:2]] == ["", None]
    assert out.records[2]["Phone"] == PS.pseudonymize("acme", " ")  # whitespace is a value
    assert out.pseudonymized == {"Phone": 1}
