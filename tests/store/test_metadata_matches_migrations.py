"""The tables the code declares (:data:`store.metadata`, sqlmodel models) are exactly the tables the
Alembic migrations create: tables, columns, types and lengths, nullability, server defaults, indexes,
unique constraints and primary-key names.

The migrations are the schema's source of truth (they built every deployed database), so a model
that drifts from them — a column added to a model without a migration, a length changed in one place
only — fails here. Runs on SQLite, and on PostgreSQL in bin/test's PostgreSQL pass (``db_url``).
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, String, inspect
from sqlalchemy.engine import Connection, Engine

import store


def _literal(sql: str) -> str:
    """A rendered constant default without its parentheses and quotes: ``('')`` → empty."""
    while re.fullmatch(r"\(.*\)", sql):
        sql = sql[1:-1]
    return sql[1:-1] if re.fullmatch(r"'.*'", sql) else sql


def _server_default_differs(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's own comparison, except for one SQLite quirk: it cannot unquote an empty string, so
    the ``DEFAULT ('')`` migration 0004 created would always differ from ``server_default=""``."""
    if context.dialect.name != "sqlite" or inspected_default is None or rendered_metadata_default is None:
        return None
    return _literal(inspected_default) != _literal(rendered_metadata_default)


def differences(conn: Connection, metadata: MetaData) -> list[tuple[Any, ...]]:
    """What Alembic's autogenerate would write into a new migration for ``metadata``, flattened to
    ``(operation, table, column or index name)``; empty when the database already is ``metadata``."""
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": _server_default_differs}
    )
    out: list[tuple[Any, ...]] = []
    for diff in compare_metadata(context, metadata):
        for op in diff if isinstance(diff, list) else [diff]:
            if op[0].startswith("modify_"):  # (op, schema, table, column, ...)
                out.append((op[0], op[2], op[3]))
            elif op[0].endswith("_column"):  # (op, schema, table, Column)
                out.append((op[0], op[2], op[3].name))
            elif op[0].endswith(("_index", "_constraint")):  # (op, Index or Constraint)
                out.append((op[0], op[1].table.name, op[1].name))
            else:  # add_table / remove_table: (op, Table)
                out.append((op[0], op[1].name))
    return sorted(out, key=repr)


def test_the_models_are_what_the_migrations_created(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        assert differences(conn, store.metadata) == []
    # every table the migrations made is declared (and nothing else is): alembic_version aside
    tables = set(inspect(db_engine).get_table_names()) - {"alembic_version"}
    assert tables == set(store.metadata.tables)
    # 0013: association_links, association_deferrals; 0019: audit_access_denied; 0023: incident_ledger_outbox
    # (0028 replaces it by ledger_outbox: the count stays)
    assert len(tables) == 33


def test_a_model_changed_without_a_migration_is_caught(db_engine: Engine) -> None:
    """The comparison sees a column, a length and an index that exist in the code only."""
    altered = MetaData()
    for table in store.metadata.sorted_tables:
        table.to_metadata(altered)
    syncs = altered.tables["syncs"]
    syncs.append_column(Column("notes", String(500), nullable=True))
    runs = altered.tables["sync_runs"]
    runs.c.message.type = String(2000)
    Index("ix_dead_letters_code", altered.tables["dead_letters"].c.error_code)
    with db_engine.connect() as conn:
        assert differences(conn, altered) == [
            ("add_column", "syncs", "notes"),
            ("add_index", "dead_letters", "ix_dead_letters_code"),
            ("modify_type", "sync_runs", "message"),
        ]


def test_primary_keys_have_the_migrations_names(db_engine: Engine) -> None:
    """Autogenerate does not compare primary-key names; the models name them as the migrations did
    (``pk_<table>``), and leave unnamed the one the migrations left unnamed."""
    inspector = inspect(db_engine)
    postgres = db_engine.dialect.name == "postgresql"
    for table in store.metadata.sorted_tables:
        reflected = inspector.get_pk_constraint(table.name)
        assert reflected["constrained_columns"] == [c.name for c in table.primary_key.columns], table.name
        unnamed = f"{table.name}_pkey" if postgres else None  # the database's own name for it
        expected = table.primary_key.name if table.primary_key.name is not None else unnamed
        assert reflected["name"] == expected, table.name
    assert store.metadata.tables["lineage_checkpoints"].primary_key.name is None
