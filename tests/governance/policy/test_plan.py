"""The plan check: what it accepts and reports, and the rule each refusal names (JSON-ready reasons)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from governance.policy import PlanRefused, ProcessingInstruction, SyncPlan, TransformRegistry, check
from schemas.errors import ConfigError, PurposeViolation
from tests.governance.policy.support import instruction, plan


def test_check_accepts_and_reports(registry: TransformRegistry) -> None:
    result = check(
        plan(transforms=("full_name",), field_mapping={"Id": "id", "FullName": "name"}),
        instruction(),
        registry=registry,
        source_fields=["Id", "Email", "FirstName", "LastName", "Phone", "Birthdate"],
    )
    assert result.transforms == ["full_name@1"]
    assert result.fields_read == ["FirstName", "Id", "LastName"]
    assert result.withheld_fields == ["Birthdate", "Phone"]
    assert result.pseudonymized_fields == ["Email"]
    assert result.instruction_hash == instruction().content_hash


def _refusal(registry: TransformRegistry, p: SyncPlan, ins: ProcessingInstruction | None = None, **kw: Any):
    with pytest.raises(PlanRefused) as info:
        check(p, ins or instruction(), registry=registry, **kw)
    assert isinstance(info.value, PurposeViolation)
    reason = info.value.reason
    json.dumps(reason)  # ready for a lineage refusal event
    assert reason["tenant"] == "acme"
    assert reason["instruction_version"] == 3
    return info.value, reason


def test_mapping_outside_allowlist_is_refused(registry: TransformRegistry) -> None:
    exc, reason = _refusal(registry, plan(field_mapping={"Id": "id", "Phone": "phone"}))
    assert reason["rule"] == "mapping"
    assert reason["field"] == "Phone"
    assert "Phone" in str(exc)
    assert exc.code == "purpose_violation.mapping"


def test_transform_reading_outside_allowlist_is_refused(registry: TransformRegistry) -> None:
    _, reason = _refusal(registry, plan(transforms=("phone",)))
    assert reason["rule"] == "transform_reads"
    assert reason["transform"] == "phone@1"
    assert reason["field"] == "Phone"


def test_transform_serving_other_purpose_is_refused(registry: TransformRegistry) -> None:
    exc, reason = _refusal(registry, plan(transforms=("score@1",)))
    assert reason["rule"] == "transform_purpose"
    assert reason["transform"] == "score@1"
    assert "crm_sync" in str(exc)


def test_unknown_transform_is_refused(registry: TransformRegistry) -> None:
    _, reason = _refusal(registry, plan(transforms=("nope",)))
    assert reason["rule"] == "unknown_transform"
    _, reason = _refusal(registry, plan(transforms=("full_name@7",)))
    assert reason["transform"] == "full_name@7"


@pytest.mark.parametrize(
    "at",
    [datetime(2024, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)],
    ids=["before", "after"],
)
def test_outside_validity_window_is_refused(registry: TransformRegistry, at: datetime) -> None:
    _, reason = _refusal(registry, plan(), at=at)
    assert reason["rule"] == "window"
    assert reason["window"]["valid_to"] == "2026-01-01T00:00:00+00:00"
    assert reason["window"]["at"] == at.isoformat()


def test_open_ended_window(registry: TransformRegistry) -> None:
    check(plan(when=datetime(2099, 1, 1, tzinfo=UTC)), instruction(valid_to=None), registry=registry)


def test_purpose_tenant_object_and_version_mismatch(registry: TransformRegistry) -> None:
    assert _refusal(registry, plan(purpose="marketing"))[1]["rule"] == "purpose"
    assert _refusal(registry, plan(source_object="Lead"))[1]["rule"] == "object"
    assert _refusal(registry, plan(instruction_version=2))[1]["rule"] == "instruction_version"
    with pytest.raises(PlanRefused) as info:
        check(plan(tenant="globex"), instruction(), registry=registry)
    assert info.value.reason["rule"] == "tenant"


def test_timedelta_window_edges(registry: TransformRegistry) -> None:
    ins = instruction()
    check(plan(), ins, at=ins.valid_from, registry=registry)  # inclusive start
    assert ins.valid_to is not None
    check(plan(), ins, at=ins.valid_to - timedelta(microseconds=1), registry=registry)


def test_naive_check_time_is_refused(registry: TransformRegistry) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        check(plan(), instruction(), at=datetime(2025, 6, 1), registry=registry)
