"""Fixtures of the end-to-end tests: the stack's (``tests/sync_support.py``), with workers that pull two
pages per activity and continue as new after three batches."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync_support import demo, demo_tenant, sandbox, seed_counts, settings, world

__all__ = ["demo", "demo_tenant", "sandbox", "seed_counts", "settings", "world"]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2, "continue_as_new_after_batches": 3}
