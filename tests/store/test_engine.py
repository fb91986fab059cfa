from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from schemas.errors import ConfigError
from store.engine import is_sqlite, make_engine
from store.migrate import alembic_config


def test_db_fixture_is_at_every_head(db_url, db_engine) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config(db_url)).get_heads())
    with db_engine.connect() as conn:
        applied = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    assert applied == heads


def test_bad_url_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="CRMHUB_DATABASE_URL"):
        make_engine("not a url")


def test_unsupported_backend_is_config_error() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        make_engine("mysql://root@127.0.0.1/test")


def test_is_sqlite() -> None:
    assert is_sqlite("sqlite:///x.db")
    assert not is_sqlite("postgresql+psycopg://postgres@127.0.0.1/test")
