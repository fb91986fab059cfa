"""Fixtures of the end-to-end tests: the stack's (``tests/sync_support.py``), with workers that pull two
pages per activity and continue as new after three batches, and the notice receivers
(``tests/notice_support.py``: a started SMTP server, a webhook receiver)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.notice_support import receiver, smtp
from tests.sync_support import World, demo, demo_tenant, sandbox, seed_counts, settings, worker_env, world

__all__ = ["demo", "demo_tenant", "receiver", "sandbox", "seed_counts", "settings", "smtp", "world"]


@pytest.fixture
def worker_options() -> dict[str, Any]:
    return {"pages_per_activity": 2, "continue_as_new_after_batches": 3}


@pytest.fixture
def cli_env(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``crmhub`` run in-process reads this test's stack from the environment."""
    for key, value in worker_env(world.settings).items():
        if key.startswith("CRMHUB_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")
