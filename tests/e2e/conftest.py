"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings
from tests.stack import stack_settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    """Settings pointing at the session dev server, this test's database and fresh task queues."""
    return stack_settings(
        tmp_path / "data", db_url, temporal_env, pages_per_activity=2, continue_as_new_after_batches=3
    )
