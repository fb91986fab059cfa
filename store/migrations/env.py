"""Alembic environment: runs migrations against the URL given by store.migrate."""

from __future__ import annotations

from alembic import context

from store.engine import make_engine

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url, pooled=False)
    with engine.connect() as connection:
        context.configure(connection=connection, render_as_batch=engine.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
