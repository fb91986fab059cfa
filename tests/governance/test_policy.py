from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from governance.policy import (
    PlanRefused,
    ProcessingInstruction,
    SyncPlan,
    Transform,
    TransformRegistry,
    apply_transforms,
    check,
    load_instruction,
    project,
    register_transform,
)
from governance.pseudonym import Pseudonymizer, StaticKeySource
from schemas.errors import ConfigError, DataError, PurposeViolation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "instruction.yaml"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
PS = Pseudonymizer(StaticKeySource({"acme": b"k" * 32}))

BASE: dict[str, Any] = {
    "tenant": "acme",
    "version": 3,
    "purpose": "crm_sync",
    "data_categories": ["contact_details"],
    "allowed_fields": {"Contact": ["Id", "Email", "FirstName", "LastName"]},
    "pseudonymize": {"Contact": ["Email"]},
    "retention_days": 30,
    "permitted_regions": ["eea"],
    "permitted_subprocessors": ["salesforce", "hubspot"],
    "valid_from": "2025-01-01T00:00:00Z",
    "valid_to": "2026-01-01T00:00:00Z",
}


def instruction(**changes: Any) -> ProcessingInstruction:
    return ProcessingInstruction.model_validate({**BASE, **changes})


@pytest.fixture
def registry() -> TransformRegistry:
    reg = TransformRegistry()

    @register_transform(
        "full_name", purposes=["crm_sync"], reads=["FirstName", "LastName"], writes=["FullName"], registry=reg
    )
    def full_name(r: dict[str, Any]) -> dict[str, Any]:
        return {"FullName": f"{r.get('FirstName', '')} {r.get('LastName', '')}".strip()}

    @register_transform("score", purposes=["marketing"], reads=["Email"], writes=["Score"], registry=reg)
    def score(r: dict[str, Any]) -> dict[str, Any]:
        return {"Score": 1}

    @register_transform("phone", purposes=["crm_sync"], reads=["Phone"], writes=["Phone"], registry=reg)
    def phone(r: dict[str, Any]) -> dict[str, Any]:
        return r

    return reg


def plan(**changes: Any) -> SyncPlan:
    base: dict[str, Any] = {
        "tenant": "acme",
        "source_object": "Contact",
        "destination_object": "contacts",
        "field_mapping": {"Id": "salesforce_id", "Email": "email"},
        "transforms": (),
        "purpose": "crm_sync",
        "when": NOW,
    }
    return SyncPlan.model_validate({**base, **changes})


# ---- instruction ------------------------------------------------------------------------------


def test_example_instruction_loads() -> None:
    ins = load_instruction(EXAMPLE)
    assert ins.tenant == "acme"
    assert ins.version == 3
    assert "Email" in ins.allowed_fields["Contact"]
    assert ins.pseudonymize["Contact"] == ("Email",)
    assert ins.content_hash.startswith("sha256:")


def test_content_hash_is_canonical() -> None:
    a = instruction()
    b = instruction(allowed_fields={"Contact": ["LastName", "FirstName", "Email", "Id"]})
    assert a.content_hash == b.content_hash
    assert instruction(retention_days=31).content_hash != a.content_hash
    expected = json.dumps(
        a.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert a.content_hash == "sha256:" + hashlib.sha256(expected.encode()).hexdigest()


def test_instruction_is_frozen() -> None:
    ins = instruction()
    with pytest.raises(Exception, match="frozen"):
        ins.purpose = "marketing"  # type: ignore[misc]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "instruction.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"retention_days": 0}, "retention_days", "whole number of days"),
        ({"valid_from": "2025-01-01T00:00:00"}, "valid_from", "with a timezone"),
        ({"allowed_fields": {"Contact": []}}, "allowed_fields.Contact", "at least one field"),
        ({"allowed_fields": {"Contact": ["Id", "Id"]}}, "allowed_fields.Contact", "duplicate"),
        ({"pseudonymize": {"Contact": ["SSN"]}}, "pseudonymize.Contact", "not in allowed_fields"),
        ({"pseudonymize": {"Lead": ["Email"]}}, "pseudonymize.Lead", "not in allowed_fields"),
        ({"valid_to": "2024-01-01T00:00:00Z"}, "valid_to", "later than valid_from"),
        ({"permitted_regions": []}, "permitted_regions", "region code"),
        ({"purpos": "typo"}, "purpos", "fix its spelling"),
    ],
)
def test_yaml_errors_name_the_field_and_fix(
    tmp_path: Path, change: dict[str, Any], field: str, fix: str
) -> None:
    data = {**BASE, **change}
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_instruction(path)
    message = str(info.value)
    assert field in message
    assert fix in message
    assert str(path) in message


def test_yaml_missing_field_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'purpose': Field required; fix: set purpose"):
        load_instruction(_write(tmp_path, "tenant: acme\nversion: 1\n"))
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_instruction(_write(tmp_path, "tenant: acme\n  version: [1\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_instruction(_write(tmp_path, "- just a list\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_instruction(tmp_path / "missing.yaml")


def test_yaml_errors_do_not_echo_values(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump({**BASE, "retention_days": "alice@example.com"}))
    with pytest.raises(ConfigError) as info:
        load_instruction(path)
    assert "alice" not in str(info.value)


# ---- check ------------------------------------------------------------------------------------


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


def test_duplicate_transform_registration(registry: TransformRegistry) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(Transform("full_name", 1, frozenset({"x"}), frozenset(), frozenset(), lambda r: r))
    registry.register(
        Transform("full_name", 2, frozenset({"crm_sync"}), frozenset(), frozenset(), lambda r: r)
    )
    entry = registry.get("full_name")
    assert entry is not None
    assert entry.ref == "full_name@2"
    with pytest.raises(ConfigError, match="at least one purpose"):
        register_transform("nop", purposes=[], reads=[], writes=[], registry=registry)(lambda r: r)


# ---- project ----------------------------------------------------------------------------------

RECORD = {
    "Id": "003A1",
    "Email": "alice@example.com",
    "FirstName": "Alice",
    "LastName": "Liddell",
    "Phone": "+44 1",
    "Birthdate": "1852-05-04",
}


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


def test_apply_transforms_sees_only_declared_reads(registry: TransformRegistry) -> None:
    seen: list[dict[str, Any]] = []

    def spy(r: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(r))
        return {"Initials": "".join(v[0] for v in r.values())}

    t = Transform(
        "initials",
        1,
        frozenset({"crm_sync"}),
        frozenset({"FirstName", "LastName"}),
        frozenset({"Initials"}),
        spy,
    )
    rec = project([RECORD], instruction(), "Contact", pseudonymizer=PS).records
    apply_transforms(rec, [t])
    assert seen == [{"FirstName": "Alice", "LastName": "Liddell"}]
    assert rec[0]["Initials"] in ("AL", "LA")

    rogue = Transform("rogue", 1, frozenset({"crm_sync"}), frozenset(), frozenset({"A"}), lambda r: {"B": 1})
    with pytest.raises(DataError, match=r"wrote \['B'\] outside its declared writes"):
        apply_transforms(rec, [rogue])


def test_timedelta_window_edges(registry: TransformRegistry) -> None:
    ins = instruction()
    check(plan(), ins, at=ins.valid_from, registry=registry)  # inclusive start
    assert ins.valid_to is not None
    check(plan(), ins, at=ins.valid_to - timedelta(microseconds=1), registry=registry)


def test_naive_check_time_is_refused(registry: TransformRegistry) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        check(plan(), instruction(), at=datetime(2025, 6, 1), registry=registry)
