"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str, temporal_env: Any) -> Settings:
    """Settings pointing at the session dev server, this test's database and fresh task queues."""
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        temporal={
            "address": temporal_env.client.service_client.config.target_host,
            "control_task_queue": f"control-{suffix}",
        },
        regions={
            "eu": {"task_queue": f"eu-{suffix}", "jurisdiction": "EEA"},
            "us": {"task_queue": f"us-{suffix}", "jurisdiction": "US"},
        },
        worker={"pages_per_activity": 2, "continue_as_new_after_batches": 3},
    )
