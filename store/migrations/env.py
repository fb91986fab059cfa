"""Alembic environment: runs migrations against the URL given by store.migrate.

``target_metadata`` is :data:`store.metadata` (the sqlmodel tables), so Alembic's autogenerate
(``alembic.command.revision(store.migrate.alembic_config(url), message, autogenerate=True)`` against
a database at head) drafts the migration a model change needs — review it before committing; until
it exists, tests/store/test_metadata_matches_migrations.py fails.
"""

from __future__ import annotations

from alembic import context

from store import metadata
from store.engine import make_engine

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url, pooled=False)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            compare_type=True,
            render_as_batch=engine.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
