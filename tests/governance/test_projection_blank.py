"""Regression test: a blank value of a pseudonymized field stays blank (found by
tests/chaos/test_bad_input.py at full size: an empty Salesforce Phone reached HubSpot as a ps_… value)."""

from __future__ import annotations

from typing import Any

from governance.policy import ProcessingInstruction, project
from governance.pseudonym import Pseudonymizer, StaticKeySource

PS = Pseudonymizer(StaticKeySource({"acme": b"k" * 32}))


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
