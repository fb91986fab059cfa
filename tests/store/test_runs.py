"""The run store: runs are idempotent per run id and listed newest first.

Runs on SQLite, or PostgreSQL with CRMHUB_TEST_DATABASE_URL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Connection, Engine

from schemas.errors import ConfigError
from store import runs as run_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def start(conn: Connection, run_id: str, **over: Any) -> run_store.RunRow:
    """``start_run`` of a manual full run of acme's ``contacts`` sync at ``NOW``, but for ``over``."""
    values: dict[str, Any] = {
        "tenant": "acme",
        "sync_id": "contacts",
        "mode": "full",
        "trigger": "manual",
        "status": "running",
        "now": NOW,
    }
    return run_store.start_run(conn, run_id=run_id, **(values | over))


def test_runs_are_idempotent_and_listed_newest_first(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        start(conn, "r1")
        # A retried plan of the same run updates it instead of failing.
        start(conn, "r1", status="refused", message="mapping reads Phone")
        start(conn, "r2", mode="incremental", trigger="schedule", now=NOW + timedelta(hours=1))
        run_store.finish_run(
            conn,
            "r2",
            status="completed",
            counts={"pulled": 5, "pushed": 4},
            message="ok",
            now=NOW + timedelta(hours=2),
        )
        with pytest.raises(ConfigError, match="another sync"):
            start(conn, "r1", sync_id="other")
    with db_engine.connect() as conn:
        runs = run_store.list_runs(conn, "acme", "contacts")
    assert [r.run_id for r in runs] == ["r2", "r1"]
    assert runs[1].status == "refused" and runs[1].message == "mapping reads Phone"
    assert runs[0].counts == {"pulled": 5, "pushed": 4}
    assert runs[0].finished == NOW + timedelta(hours=2)
