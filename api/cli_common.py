"""What several ``crmhub`` commands need alike: the database on the current schema and the check that
a tenant named on the command line exists. Imports of the store happen when a command runs, so
``crmhub --help`` stays quick."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.errors import ConfigError
from schemas.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["migrated_engine", "require_tenant"]


def migrated_engine(settings: Settings) -> Engine:
    """An engine on the configured database, migrated to the current schema first (the caller
    disposes of it)."""
    from store.engine import make_engine
    from store.migrate import ensure_current

    ensure_current(settings.effective_database_url)
    return make_engine(settings.effective_database_url)


def require_tenant(engine: Engine, tenant: str) -> None:
    """Raise :class:`ConfigError` (naming the command that fixes it) unless ``tenant`` exists."""
    from store import tenants as tenant_store

    with engine.connect() as conn:
        if tenant_store.get_tenant(conn, tenant) is None:
            raise ConfigError(f"no tenant {tenant!r}; create it with: crmhub tenant create {tenant}")
