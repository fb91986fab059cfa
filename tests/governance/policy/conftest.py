"""The transform registry the plan and transform tests check against."""

from __future__ import annotations

from typing import Any

import pytest

from governance.policy import TransformRegistry, register_transform


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
