"""Transforms: registration by name@version, and each one sees only what it declared it reads."""

from __future__ import annotations

from typing import Any

import pytest

from governance.policy import Transform, TransformRegistry, apply_transforms, project, register_transform
from schemas.errors import ConfigError, DataError
from tests.governance.policy.support import PS, RECORD, instruction


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
