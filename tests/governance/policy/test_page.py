"""PageProcessor: one page's whole governance step in one call (issue 15) — the same records, keys,
quarantine and counts as the pieces it is made of, applied in the order purpose limitation needs."""

from __future__ import annotations

from typing import Any

import pytest

from governance.policy import (
    PageProcessor,
    PlanRefused,
    TransformRegistry,
    apply_transforms,
    check,
    project,
    screen,
)
from schemas.errors import DataError
from tests.governance.policy.support import NOW, PS, RECORD, instruction, plan

PLANNED = {"Id": "id", "Email": "email", "FirstName": "string", "LastName": "string"}


def records() -> list[dict[str, Any]]:
    return [
        {**RECORD, "Id": "003A1"},
        {**RECORD, "Id": "003A2", "FirstName": 42},  # a number where the plan saw text: quarantined
        {**RECORD, "Id": "003A3", "Email": ""},
    ]


def processor(
    registry: TransformRegistry,
    planned: dict[str, str] | None = PLANNED,
    live: dict[str, str] | None = None,
) -> PageProcessor:
    inst = instruction(valid_to=None)
    mapping = {"Id": "salesforce_id", "Email": "email", "FirstName": "firstname", "LastName": "lastname"}
    checked = check(plan(field_mapping=mapping, transforms=("full_name",)), inst, at=NOW, registry=registry)
    return PageProcessor.for_check(
        checked, inst, registry, key_field="Id", pseudonymizer=PS, planned_types=planned, live_types=live
    )


def test_one_call_equals_the_pieces_in_order(registry: TransformRegistry) -> None:
    proc = processor(registry, live={**PLANNED, "FirstName": "double"})
    page = records()
    governed = proc.process(page, deleted_ids=["003Z9"])
    # The same as walking the pieces: screen, project (pseudonymize), transform.
    screened = screen(page, PLANNED, live={**PLANNED, "FirstName": "double"})
    projected = project(screened.kept, proc.instruction, "Contact", pseudonymizer=PS)
    assert governed.records == apply_transforms(projected.records, proc.transforms)
    assert governed.keys == [PS.keyed_hash("acme", "003A1"), PS.keyed_hash("acme", "003A3")]
    assert governed.deleted == [PS.keyed_hash("acme", "003Z9")]
    assert (governed.withheld_fields, governed.withheld_values) == (("Birthdate", "Phone"), 4)
    assert governed.pseudonymized == 1  # "" is no value: nothing to pseudonymize
    assert governed.read == 3
    first = governed.records[0]
    assert first["FullName"] == "Alice Liddell" and first["Email"].startswith("ps_")
    assert "Phone" not in first and "Birthdate" not in first
    (held,) = governed.quarantined
    assert held.key == PS.keyed_hash("acme", "003A2")
    assert held.reason == "FirstName: planned type string, observed number (the field is now double)"
    # The quarantine holds nothing the staging would not: projected and pseudonymized too.
    assert set(held.record) == {"Id", "Email", "FirstName", "LastName"}
    assert held.record["Email"].startswith("ps_")
    assert "alice@example.com" not in repr(governed)


def test_source_ids_are_hashed_never_kept_as_keys(registry: TransformRegistry) -> None:
    governed = processor(registry, planned=None).process([{**RECORD, "Id": 3001}])
    assert governed.keys == [PS.keyed_hash("acme", "3001")] and governed.keys[0].startswith("kh_")


def test_a_record_without_its_key_is_a_data_error(registry: TransformRegistry) -> None:
    with pytest.raises(DataError, match="a Contact record came without its key Id"):
        processor(registry).process([{**RECORD, "Id": ""}])


def test_without_a_contract_nothing_is_held(registry: TransformRegistry) -> None:
    governed = processor(registry, planned=None).process(records())
    assert governed.quarantined == [] and len(governed.records) == 3


def test_an_object_outside_the_instruction_is_refused(registry: TransformRegistry) -> None:
    proc = processor(registry)
    other = PageProcessor(proc.instruction, "Lead", "Id", PS)
    with pytest.raises(PlanRefused):
        other.process([{"Id": "00Q1"}])


def test_suppressed_subjects_are_dropped_before_anything_and_only_counted(
    registry: TransformRegistry,
) -> None:
    proc = processor(registry, live={**PLANNED, "FirstName": "double"})
    gone = {PS.keyed_hash("acme", "003A1"), PS.keyed_hash("acme", "003A2")}  # a kept and a misfit record
    suppressing = PageProcessor.for_check(
        check(
            plan(field_mapping={"Id": "salesforce_id", "Email": "email"}, transforms=("full_name",)),
            proc.instruction, at=NOW, registry=registry,
        ),
        proc.instruction, registry, key_field="Id", pseudonymizer=PS, planned_types=PLANNED,
        suppressed=frozenset(gone),
    )  # fmt: skip
    governed = suppressing.process(records(), deleted_ids=["003A1"])
    assert governed.suppressed == 2
    assert governed.keys == [PS.keyed_hash("acme", "003A3")] and len(governed.records) == 1
    assert governed.quarantined == []  # the misfit was suppressed first: not even held
    assert governed.read == 1
    # a suppressed subject's deletion at the source still reaches the destination
    assert governed.deleted == [PS.keyed_hash("acme", "003A1")]
    assert processor(registry).process(records()).suppressed == 0
