"""Session-wide fixtures.

``db_url`` gives each test a fresh, migrated database: a SQLite file in the test's tmp dir by
default, or, when ``CRMHUB_TEST_DATABASE_URL`` names a PostgreSQL server, a fresh schema in it
(dropped afterwards) so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.migrate import upgrade

TEST_DATABASE_URL = os.environ.get("CRMHUB_TEST_DATABASE_URL", "")


def _postgres_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


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
