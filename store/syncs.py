"""Syncs: what moves from which source stream to which destination stream, and where it stands
(table ``syncs``, migrations ``0006_syncs`` and ``0009_schema_contract``).

A sync is keyed by (tenant, id) and holds its :class:`SyncSpec` — source/destination connection,
stream and registry endpoint, the mapping {source field: destination field}, the id properties, the
transforms and the instruction version it cites — and its state: the cursor (a
:class:`~schemas.connector.StreamState`: timestamps and vendor ids only, no PII) where the next
incremental run starts, the last run, the status, and ``accepted_types``: the field types its runs
accepted under one instruction hash (the type contract of the next run, see
:mod:`workflows.plan`).

Every function takes a SQLAlchemy ``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic
from sqlalchemy import JSON, DateTime, Integer, PrimaryKeyConstraint, String, Update, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from schemas.connector import StreamState
from schemas.errors import ConfigError
from schemas.sync import SyncWriteMode, relationship_mode_refusal, write_mode_refusal
from store._sql import required_aware, table_of
from store.connections import get_connection
from store.instructions import get_instruction

__all__ = [
    "SyncRow",
    "SyncSpec",
    "SyncTable",
    "accepted_types",
    "create_sync",
    "get_sync",
    "mapping_hash",
    "set_accepted_types",
    "set_sync_connections",
    "set_sync_instruction",
    "set_sync_mapping",
    "set_sync_status",
    "set_sync_write_mode",
    "sync_connections",
    "syncs",
    "update_cursor",
]


class SyncTable(SQLModel, table=True):
    """Declaration of the ``syncs`` table (read and written through :data:`syncs`)."""

    __tablename__ = "syncs"
    __table_args__ = (PrimaryKeyConstraint("tenant", "id", name="pk_syncs"),)

    tenant: str = Field(sa_type=String(128), primary_key=True)
    id: str = Field(sa_type=String(128), primary_key=True)
    name: str = Field(sa_type=String(255))
    source_connection_id: str = Field(sa_type=String(64))
    source_stream: str = Field(sa_type=String(128))
    source_endpoint: str | None = Field(sa_type=String(64))
    destination_connection_id: str = Field(sa_type=String(64))
    destination_stream: str = Field(sa_type=String(128))
    destination_endpoint: str | None = Field(sa_type=String(64))
    mapping: dict[str, str] = Field(sa_type=JSON)
    destination_id_property: str = Field(sa_type=String(128))
    source_key_property: str = Field(sa_type=String(128))
    transforms: list[str] = Field(sa_type=JSON)
    instruction_version: int = Field(sa_type=Integer)
    default_mode: str | None = Field(sa_type=String(16))
    cursor: dict[str, Any] | None = Field(sa_type=JSON)
    last_run_id: str | None = Field(sa_type=String(128))
    status: str = Field(sa_type=String(32))
    created: datetime = Field(sa_type=DateTime(timezone=True))
    updated: datetime = Field(sa_type=DateTime(timezone=True))
    accepted_types: dict[str, Any] | None = Field(sa_type=JSON)
    reconcile: str | None = Field(default=None, sa_type=String(64))  # 0012_reconcile: see store.reconcile
    reconcile_requested: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    write_mode: str | None = Field(default=None, sa_type=String(16))  # 0014_write_modes: SyncWriteMode


syncs = table_of(SyncTable)


class SyncSpec(pydantic.BaseModel):
    """What a sync moves: source stream → destination stream under one instruction version.

    ``mapping`` is {source field: destination field}. The destination's ``destination_id_property``
    (the upsert key, e.g. HubSpot ``email`` or Salesforce ``External_Id__c``) is filled from the
    source field ``source_key_property``. ``write_mode`` says what the push may write (create, update,
    delete: :class:`~schemas.sync.SyncWriteMode`). ``source_endpoint``/``destination_endpoint`` name the
    registry endpoint instance (e.g. ``eu``, ``eu1``, ``na1``) when the connection URL does not
    tell (a Salesforce My Domain, the sandbox).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    tenant: str = pydantic.Field(min_length=1, max_length=128)
    id: str = pydantic.Field(min_length=1, max_length=128)
    name: str = ""
    source_connection_id: str
    source_stream: str
    source_endpoint: str | None = None
    destination_connection_id: str
    destination_stream: str
    destination_endpoint: str | None = None
    mapping: dict[str, str] = pydantic.Field(min_length=1)
    destination_id_property: str
    source_key_property: str
    transforms: tuple[str, ...] = ()
    instruction_version: int = pydantic.Field(ge=1)
    default_mode: str | None = None
    write_mode: SyncWriteMode = SyncWriteMode.UPSERT


def mapping_hash(spec: SyncSpec) -> str:
    """A digest of what shapes the record a sync sends — mapping, id properties, transforms and
    destination stream — recorded on each dead letter (a change of it retries the letters refused
    under another one: :mod:`store.dead_letters`). 32 hex digits of SHA-256."""
    shape = {
        "mapping": dict(sorted(spec.mapping.items())), "key": spec.source_key_property,
        "id": spec.destination_id_property, "transforms": list(spec.transforms),
        "destination": spec.destination_stream,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SyncRow:
    """A stored sync with its state (cursor, last run, status)."""

    spec: SyncSpec
    cursor: StreamState | None
    last_run_id: str | None
    status: str
    created: datetime
    updated: datetime


def _update(tenant: str, id: str) -> Update:
    """``UPDATE syncs`` of the one sync (tenant, id)."""
    return update(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id)


def create_sync(conn: Connection, spec: SyncSpec, *, now: datetime, status: str = "idle") -> SyncRow:
    """Insert a sync (no cursor yet: its first run is a full read)."""
    if get_sync(conn, spec.tenant, spec.id) is not None:
        raise ConfigError(f"sync {spec.id!r} of tenant {spec.tenant!r} already exists")
    values = spec.model_dump()
    values["write_mode"] = spec.write_mode.value
    values["transforms"] = list(spec.transforms)
    conn.execute(
        syncs.insert().values(
            **values, cursor=None, last_run_id=None, status=status, created=now, updated=now
        )
    )
    return SyncRow(spec, None, None, status, now, now)


def get_sync(conn: Connection, tenant: str, id: str) -> SyncRow | None:
    m = conn.execute(select(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id)).mappings().one_or_none()
    if m is None:
        return None
    values = {k: m[k] for k in SyncSpec.model_fields}
    # A row written before 0014 without a mode (the migration fills them): those syncs propagated deletes.
    values["write_mode"] = values["write_mode"] or SyncWriteMode.MIRROR
    spec = SyncSpec.model_validate(values)
    cursor = None if m["cursor"] is None else StreamState.model_validate(m["cursor"])
    return SyncRow(
        spec,
        cursor,
        m["last_run_id"],
        m["status"],
        required_aware(m["created"]),
        required_aware(m["updated"]),
    )


def sync_connections(conn: Connection, tenant: str) -> dict[str, tuple[str, str]]:
    """{sync id: (source connection id, destination connection id)} of the tenant's syncs."""
    q = select(syncs.c.id, syncs.c.source_connection_id, syncs.c.destination_connection_id).where(
        syncs.c.tenant == tenant
    )
    return {r.id: (r.source_connection_id, r.destination_connection_id) for r in conn.execute(q)}


def update_cursor(
    conn: Connection,
    tenant: str,
    id: str,
    cursor: StreamState | None,
    *,
    now: datetime,
    last_run_id: str | None = None,
    status: str | None = None,
) -> None:
    """Store the sync's cursor (where its next incremental run starts), and optionally its last run
    and status."""
    values: dict[str, Any] = {
        "cursor": None if cursor is None else cursor.model_dump(mode="json"),
        "updated": now,
    }
    if last_run_id is not None:
        values["last_run_id"] = last_run_id
    if status is not None:
        values["status"] = status
    conn.execute(_update(tenant, id).values(**values))


def set_sync_status(
    conn: Connection, tenant: str, id: str, status: str, *, now: datetime, last_run_id: str | None = None
) -> None:
    """Set the sync's status (and last run) without touching its cursor."""
    values: dict[str, Any] = {"status": status, "updated": now}
    if last_run_id is not None:
        values["last_run_id"] = last_run_id
    conn.execute(_update(tenant, id).values(**values))


def set_sync_instruction(conn: Connection, tenant: str, id: str, version: int, *, now: datetime) -> None:
    """Make the sync cite instruction ``version`` (the controller re-issued its instruction); a
    :class:`ConfigError` if the tenant has not stored that version."""
    if get_instruction(conn, tenant, version) is None:
        raise ConfigError(f"tenant {tenant!r} has no instruction v{version}; store it first")
    conn.execute(_update(tenant, id).values(instruction_version=version, updated=now))


def set_sync_connections(
    conn: Connection, tenant: str, id: str, *, source: str, destination: str, now: datetime
) -> bool:
    """Point the sync at other connections of its tenant (e.g. the CRMs were connected again).

    A new *source* connection may be another org or portal, where the stored cursor means nothing:
    it is cleared, so the next run reads in full. Returns whether anything changed; a
    :class:`ConfigError` if the sync or a connection is unknown or belongs to another tenant."""
    row = get_sync(conn, tenant, id)
    if row is None:
        raise ConfigError(f"tenant {tenant!r} has no sync {id!r}")
    for role, cid in (("source", source), ("destination", destination)):
        found = get_connection(conn, cid)
        if found is None or found.tenant != tenant:
            raise ConfigError(f"{role} connection {cid!r} is not a connection of tenant {tenant!r}")
    spec = row.spec
    if (spec.source_connection_id, spec.destination_connection_id) == (source, destination):
        return False
    values: dict[str, Any] = {"source_connection_id": source, "destination_connection_id": destination}
    if source != spec.source_connection_id:
        values["cursor"] = None
    conn.execute(_update(tenant, id).values(**values, updated=now))
    return True


def set_sync_mapping(
    conn: Connection, tenant: str, id: str, mapping: Mapping[str, str], *, now: datetime
) -> None:
    """Replace the sync's field mapping {source field: destination field} (e.g. after a source field
    was renamed); a :class:`ConfigError` if it is empty."""
    if not mapping:
        raise ConfigError(f"sync {id!r} needs at least one mapped field")
    conn.execute(_update(tenant, id).values(mapping=dict(mapping), updated=now))


def accepted_types(conn: Connection, tenant: str, id: str) -> tuple[str, dict[str, str]] | None:
    """``(instruction hash, {field: type})`` the sync's runs accepted, or None before its first plan."""
    stmt = select(syncs.c.accepted_types).where(syncs.c.tenant == tenant, syncs.c.id == id)
    value = conn.execute(stmt).scalar_one_or_none()
    if not isinstance(value, dict) or not isinstance(value.get("types"), dict):
        return None
    return str(value.get("instruction_hash", "")), {str(k): str(v) for k, v in value["types"].items()}


def set_accepted_types(
    conn: Connection, tenant: str, id: str, *, instruction_hash: str, types: Mapping[str, str]
) -> None:
    """Record the field types the sync's runs accept under the instruction ``instruction_hash``."""
    value = {"instruction_hash": instruction_hash, "types": dict(sorted(types.items()))}
    conn.execute(_update(tenant, id).values(accepted_types=value))


def set_sync_write_mode(
    conn: Connection, tenant: str, id: str, mode: SyncWriteMode, *, now: datetime
) -> None:
    """Change what the sync's next pushes may write; a :class:`ConfigError` naming ``write_mode``
    if the sync is unknown or its destination cannot honour ``mode``
    (:func:`~schemas.sync.write_mode_refusal`)."""
    row = get_sync(conn, tenant, id)
    if row is None:
        raise ConfigError(f"tenant {tenant!r} has no sync {id!r}")
    dest = get_connection(conn, row.spec.destination_connection_id)
    refusal = write_mode_refusal(
        mode, dest.provider if dest is not None else "?"
    ) or relationship_mode_refusal(mode, row.spec.source_stream, row.spec.destination_stream)
    if refusal is not None:
        raise ConfigError(refusal)
    conn.execute(_update(tenant, id).values(write_mode=mode.value, updated=now))
