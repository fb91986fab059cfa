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


def test_ensure_current_migrates_a_fresh_sqlite_file(tmp_path) -> None:
    from store.migrate import ensure_current, is_current

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert not is_current(url)
    ensure_current(url)
    assert is_current(url)


def test_ensure_current_refuses_an_unmigrated_postgres_schema(db_url) -> None:
    import uuid

    from store.migrate import ensure_current

    if is_sqlite(db_url):
        pytest.skip("PostgreSQL-only behaviour; runs in the PostgreSQL pass of bin/test")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(db_url, pooled=False)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = db_url.split("?")[0]
    try:
        with pytest.raises(ConfigError, match="crmhub db upgrade"):
            ensure_current(f"{base}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
