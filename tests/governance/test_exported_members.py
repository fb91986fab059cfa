"""Keep the governance public surfaces honest (as httpx's tests/test_exported_members.py does): every
name in ``__all__`` exists, and every public name a package defines or re-exports is in ``__all__``."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = ["governance", "governance.policy", "governance.lineage"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exact(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert sorted(module.__all__) == module.__all__, "keep __all__ sorted"
    assert all(hasattr(module, n) for n in exported)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public == exported


@pytest.mark.parametrize("name", ["governance.policy", "governance.lineage"])
def test_submodules_are_private(name: str) -> None:
    module = importlib.import_module(name)
    subs = [n for n, v in vars(module).items() if isinstance(v, types.ModuleType) and not n.startswith("_")]
    assert subs == []
