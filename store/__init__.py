"""crmhub's database: the tables, the engine and small repository functions, one module a concept.

Modules (each holds one concept's table, its row type and the functions on it):
:mod:`~store.tenants`, :mod:`~store.instructions`, :mod:`~store.syncs`, :mod:`~store.runs`,
:mod:`~store.staging`, :mod:`~store.dead_letters` (and the quarantine), :mod:`~store.id_map`,
:mod:`~store.reconcile` (delete reconciliation), :mod:`~store.suppressions` (data subjects a pull drops),
:mod:`~store.associations` (relationships' links and the children waiting for their parent),
:mod:`~store.connections` (and OAuth states), :mod:`~store.keys` (the vault's wrapped keys),
:mod:`~store.lineage` (the ledger), :mod:`~store.users` (web users and sessions),
:mod:`~store.login_limits` (the web login rate limit's counters),
:mod:`~store.auditors` (auditor tokens, access log, DSR exports), :mod:`~store.codec_audit`,
:mod:`~store.ledger_outbox` (incident and notice ledger events owed to tenants);
:mod:`~store.dsr` queries across them for data-subject requests and offboarding;
:mod:`~store.engine` makes engines and :mod:`~store.migrate` applies the migrations.

**Tables are sqlmodel table models on one MetaData.** Every table is declared once, as a
``SQLModel`` class with ``table=True`` (``TenantTable``, ``SyncRunTable`` …) carrying the exact
column types, lengths, nullability, primary-key names and indexes, so all of them share
``SQLModel.metadata`` — exposed here as :data:`metadata`. Each module also names its Core table
(``store.syncs.syncs`` is ``SyncTable.__table__``): the repository functions are SQLAlchemy Core
statements on a ``Connection`` whose transaction the caller owns, and return frozen row dataclasses
that normalise what drivers hand back (timezone-aware UTC datetimes on SQLite, ``bytes`` rather
than ``memoryview``, tuples, validated specs) — no ORM sessions or identity maps in the hot path.

**The migrations are the schema's source of truth.** ``store/migrations`` (Alembic) creates and
changes the tables of every deployed database, and an applied migration is history that is never
edited. The models describe what the migrations built — so queries, types and tools see the real
schema — and ``tests/store/test_metadata_matches_migrations.py`` proves that: it migrates a fresh
SQLite and PostgreSQL database and requires Alembic's autogenerate to find no difference from
:data:`metadata`. A schema change is therefore a new migration *and* the model change, together.

Importing this package imports every table module, so :data:`metadata` is always complete.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from store import (
    associations,
    auditors,
    codec_audit,
    connections,
    dead_letters,
    id_map,
    instructions,
    keys,
    ledger_outbox,
    lineage,
    login_limits,
    notices,
    reconcile,
    runs,
    staging,
    subprocessor_versions,
    suppressions,
    syncs,
    tenants,
    users,
)

__all__ = [
    "associations",
    "auditors",
    "codec_audit",
    "connections",
    "dead_letters",
    "id_map",
    "instructions",
    "keys",
    "ledger_outbox",
    "lineage",
    "login_limits",
    "metadata",
    "notices",
    "reconcile",
    "runs",
    "staging",
    "subprocessor_versions",
    "suppressions",
    "syncs",
    "tenants",
    "users",
]

metadata: MetaData = SQLModel.metadata
"""The one MetaData every crmhub table is declared on (what the migrations must match)."""
