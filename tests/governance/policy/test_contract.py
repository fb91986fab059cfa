"""The type contract of a run (issue 7, item 6): which values fit their planned describe type, how
records are split, the reasons (never values) and the next run's refusal of a retyped field."""

from __future__ import annotations

from typing import Any

import pytest

from governance.policy import PlanRefused, ProcessingInstruction, check_types, fits, screen, value_kind

INSTRUCTION = ProcessingInstruction.model_validate(
    {
        "tenant": "acme",
        "version": 3,
        "purpose": "crm_sync",
        "allowed_fields": {"Contact": ["Id", "Email", "Lead_Score__c", "Birthdate", "Active__c"]},
        "retention_days": 7,
        "permitted_regions": ["eea"],
        "valid_from": "2025-01-01T00:00:00Z",
    }
)


@pytest.mark.parametrize(
    ("value", "planned"),
    [
        (12.0, "double"), (7, "int"), ("12", "number"), ("-3.5", "double"), (None, "double"),
        (True, "boolean"), ("false", "bool"), ("2024-02-29", "date"), ("1700000000000", "date"),
        ("2024-01-01T10:00:00.000+0000", "datetime"), ("2024-01-01T10:00:00Z", "datetime"),
        ("Gold", "picklist"), ("a@b.example", "email"), ("x", "enumeration"), ({"city": "x"}, "address"),
    ],
)  # fmt: skip
def test_values_that_fit_their_planned_type(value: Any, planned: str) -> None:
    assert fits(value, planned)


@pytest.mark.parametrize(
    ("value", "planned"),
    [
        ("twelve", "double"), ("nan", "number"), ("inf", "double"), (True, "double"),
        (float("nan"), "double"),
        ("yes", "boolean"), (1, "boolean"), ("next week", "date"), ("2024-13-45", "date"),
        ("2024-02-30", "date"), (20240101, "datetime"), ("2024-01-01", "datetime"), (12.0, "string"),
        (False, "picklist"), (["a"], "string"),
    ],
)  # fmt: skip
def test_values_that_do_not_fit(value: Any, planned: str) -> None:
    assert not fits(value, planned)


def test_value_kind_names_the_kind_only() -> None:
    values: list[Any] = [True, 3, 2.5, "secret", {}, []]
    assert [value_kind(v) for v in values] == [
        "boolean", "number", "number", "text", "object", "list",
    ]  # fmt: skip


def test_screen_holds_misfits_with_reasons_and_keeps_the_rest() -> None:
    planned = {"Lead_Score__c": "double", "Birthdate": "date", "Active__c": "boolean"}
    records: list[dict[str, Any]] = [
        {"Id": "1", "Lead_Score__c": 12.0, "Birthdate": "1990-01-01", "Active__c": True},
        {"Id": "2", "Lead_Score__c": "twelve", "Birthdate": "1990-01-01"},
        {"Id": "3", "Lead_Score__c": "13", "Other__c": "not checked"},  # numeric text fits; unplanned ignored
        {"Id": "4", "Lead_Score__c": "lots", "Birthdate": "someday", "Active__c": "yes"},
        {"Id": "5"},  # a dropped field is simply absent
    ]
    s = screen(records, planned, live={"Lead_Score__c": "string", "Birthdate": "date"})
    assert [r["Id"] for r in s.kept] == ["1", "3", "5"] and s.kept_positions == [0, 2, 4]
    assert [i for i, _ in s.held] == [1, 3]
    reasons = [m.reason for _, misfits in s.held for m in misfits]
    assert reasons == [
        "Lead_Score__c: planned type double, observed text (the field is now string)",
        "Lead_Score__c: planned type double, observed text (the field is now string)",
        "Birthdate: planned type date, observed text",
        "Active__c: planned type boolean, observed text",
    ]
    assert s.reasons()["Lead_Score__c: planned type double, observed text (the field is now string)"] == 2
    text = " ".join(reasons)
    assert not any(v in text for v in ("twelve", "lots", "someday", "yes"))


def test_screen_without_a_contract_keeps_everything() -> None:
    records = [{"Id": "1", "Lead_Score__c": "twelve"}]
    s = screen(records, {})
    assert s.kept == records and not s.held


def test_next_run_is_refused_while_a_read_field_is_retyped() -> None:
    accepted = {"Email": "email", "Lead_Score__c": "double"}
    check_types(
        INSTRUCTION, "Contact", accepted, {"Email": "email", "Lead_Score__c": "double", "New__c": "string"}
    )
    check_types(INSTRUCTION, "Contact", accepted, {"Email": "email"})  # gone: the field check names it
    with pytest.raises(PlanRefused) as err:
        check_types(INSTRUCTION, "Contact", accepted, {"Email": "email", "Lead_Score__c": "string"})
    exc = err.value
    assert exc.code == "purpose_violation.schema_drift"
    assert "Lead_Score__c double → string" in exc.message and "re-issue the instruction" in exc.message
    assert exc.reason["field"] == "Lead_Score__c"
    assert (exc.reason["planned_type"], exc.reason["live_type"]) == ("double", "string")
    assert exc.reason["instruction_version"] == 3
