"""Apply alembic migrations programmatically (``crmhub db upgrade`` and test fixtures use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["alembic_config", "upgrade"]

_HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    # '%' must be escaped for configparser interpolation.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at ``url`` to ``revision`` (default: every head of every package)."""
    command.upgrade(alembic_config(url), revision)


def is_current(url: str) -> bool:
    """Whether the database at ``url`` has every migration head applied."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from store.engine import make_engine

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            applied = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return applied == heads


def ensure_current(url: str) -> None:
    """Make sure the schema is current before a process uses it: the embedded SQLite default is
    migrated on the spot; a PostgreSQL database must be migrated deliberately (ConfigError)."""
    from schemas.errors import ConfigError
    from store.engine import is_sqlite

    if is_current(url):
        return
    if is_sqlite(url):
        upgrade(url)
        return
    raise ConfigError("the crmhub database is not migrated to this version; run: crmhub db upgrade")
