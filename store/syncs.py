"""Tenants, processing instructions, syncs and their runs, staging, dead letters and the id map.

Tables (migration ``0006_syncs``)::

    tenants          id, name, home_region (registry code, e.g. eea), authorised_subprocessors
    instructions     (tenant, version) → content JSON + content_hash: the controller's instruction
    syncs            (tenant, id) → source/destination connection, stream and registry endpoint,
                     mapping {source field: destination field}, id properties, transforms,
                     instruction version, default mode, cursor (a StreamState: timestamps and vendor
                     ids only, no PII), last run, status, accepted_types (``0009``: the field types
                     its runs accepted under one instruction hash — the contract of the next run)
    sync_runs        run_id → tenant, sync, mode, trigger, started/finished, status, counts, message,
                     planned_schema (source field → type at plan time) and the drift it reported
    staging_batches  (batch_id, part) → sealed records and sealed deleted keys between pull and push,
                     ``expires_at`` = created + the instruction's retention
    dead_letters     id → a record the destination refused: sealed record, keyed hash of its key,
                     vendor error code and a message without PII; also the *quarantine*: records a
                     pull held back because a value no longer fit its planned type (error code
                     :data:`QUARANTINED`, the reason names field and types) — so retention, erasure
                     and export cover them like every other held record
    id_map           (tenant, sync, source_key_hash) → destination id (for propagating deletes)

Plaintext record content never reaches these tables: records and deleted keys are vault
ciphertexts, record keys are keyed hashes (``kh_…``). Every function takes a SQLAlchemy
``Connection`` and leaves the transaction to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from schemas.connector import StreamState
from schemas.errors import ConfigError

__all__ = [
    "QUARANTINED",
    "DeadLetter",
    "InstructionRow",
    "RunRow",
    "StagedPart",
    "SyncRow",
    "SyncSpec",
    "TenantRow",
    "accepted_types",
    "add_dead_letters",
    "add_instruction",
    "add_run_drift",
    "count_dead_letters",
    "count_quarantined",
    "create_sync",
    "create_tenant",
    "dead_letter_key_hashes",
    "dead_letters",
    "delete_id_map",
    "delete_staged",
    "delete_staged_for_run",
    "finish_run",
    "get_instruction",
    "get_run",
    "get_staged",
    "get_sync",
    "get_tenant",
    "id_map",
    "instructions",
    "latest_instruction",
    "list_dead_letters",
    "list_quarantined",
    "list_runs",
    "list_tenants",
    "lookup_id_map",
    "metadata",
    "purge_dead_letters",
    "purge_expired_staging",
    "purge_id_map",
    "put_staged",
    "run_schema",
    "set_accepted_types",
    "set_planned_schema",
    "set_sync_instruction",
    "set_sync_mapping",
    "set_sync_status",
    "staged_parts",
    "staging_batches",
    "start_run",
    "sync_runs",
    "syncs",
    "tenants",
    "update_cursor",
    "upsert_id_map",
]

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("home_region", String(32), nullable=False),
    Column("authorised_subprocessors", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

instructions = Table(
    "instructions",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("content", JSON, nullable=False),
    Column("content_hash", String(80), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "version", name="pk_instructions"),
)

syncs = Table(
    "syncs",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("id", String(128), nullable=False),
    Column("name", String(255), nullable=False),
    Column("source_connection_id", String(64), nullable=False),
    Column("source_stream", String(128), nullable=False),
    Column("source_endpoint", String(64), nullable=True),
    Column("destination_connection_id", String(64), nullable=False),
    Column("destination_stream", String(128), nullable=False),
    Column("destination_endpoint", String(64), nullable=True),
    Column("mapping", JSON, nullable=False),
    Column("destination_id_property", String(128), nullable=False),
    Column("source_key_property", String(128), nullable=False),
    Column("transforms", JSON, nullable=False),
    Column("instruction_version", Integer, nullable=False),
    Column("default_mode", String(16), nullable=True),
    Column("cursor", JSON, nullable=True),
    Column("last_run_id", String(128), nullable=True),
    Column("status", String(32), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("accepted_types", JSON, nullable=True),
    PrimaryKeyConstraint("tenant", "id", name="pk_syncs"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("sync_id", String(128), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("started", DateTime(timezone=True), nullable=False),
    Column("finished", DateTime(timezone=True), nullable=True),
    Column("status", String(32), nullable=False),
    Column("counts", JSON, nullable=False),
    Column("message", String(1000), nullable=False),
    Column("planned_schema", JSON, nullable=True),
    Column("drift", JSON, nullable=True),
    Index("ix_sync_runs_sync", "tenant", "sync_id", "started"),
)

staging_batches = Table(
    "staging_batches",
    metadata,
    Column("batch_id", String(200), nullable=False),
    Column("part", Integer, nullable=False, autoincrement=False),
    Column("tenant", String(128), nullable=False),
    Column("sync_id", String(128), nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("records", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("deleted_keys", LargeBinary, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("batch_id", "part", name="pk_staging_batches"),
    Index("ix_staging_batches_expires", "expires_at"),
    Index("ix_staging_batches_run", "tenant", "sync_id", "run_id"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("sync_id", String(128), nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("batch_id", String(200), nullable=False),
    Column("record_key_hash", String(64), nullable=False),
    Column("sealed_record", LargeBinary, nullable=False),
    Column("error_code", String(128), nullable=False),
    Column("error_message", String(500), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Index("ix_dead_letters_sync", "tenant", "sync_id", "run_id"),
)

id_map = Table(
    "id_map",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("sync_id", String(128), nullable=False),
    Column("source_key_hash", String(64), nullable=False),
    Column("destination_id", String(255), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "sync_id", "source_key_hash", name="pk_id_map"),
)

QUARANTINED = "QUARANTINED_TYPE_MISMATCH"
"""Dead-letter error code of a quarantined record (held back at the pull, never pushed)."""

_IN_CHUNK = 500  # bound parameters per IN (...) list: well under SQLite's and PostgreSQL's limits


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for ``DateTime(timezone=True)``; every value we write is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _req(value: datetime | None) -> datetime:
    out = _aware(value)
    if out is None:  # pragma: no cover - NOT NULL columns
        raise ValueError("missing timestamp")
    return out


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i : i + _IN_CHUNK]


# ---- tenants and instructions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A controller: its home region (registry code) and the subprocessors it authorised."""

    id: str
    name: str
    home_region: str
    authorised_subprocessors: tuple[str, ...]
    created: datetime


def create_tenant(
    conn: Connection,
    *,
    id: str,
    name: str,
    home_region: str,
    authorised_subprocessors: Sequence[str],
    now: datetime,
) -> TenantRow:
    """Insert a tenant; an existing id is a :class:`ConfigError`."""
    if get_tenant(conn, id) is not None:
        raise ConfigError(f"tenant {id!r} already exists")
    conn.execute(
        tenants.insert().values(
            id=id,
            name=name,
            home_region=home_region,
            authorised_subprocessors=list(authorised_subprocessors),
            created=now,
        )
    )
    return TenantRow(id, name, home_region, tuple(authorised_subprocessors), now)


def _tenant(m: Any) -> TenantRow:
    return TenantRow(
        m["id"], m["name"], m["home_region"], tuple(m["authorised_subprocessors"]), _req(m["created"])
    )


def get_tenant(conn: Connection, id: str) -> TenantRow | None:
    m = conn.execute(select(tenants).where(tenants.c.id == id)).mappings().one_or_none()
    return None if m is None else _tenant(m)


def list_tenants(conn: Connection) -> list[TenantRow]:
    """Every tenant, in id order."""
    return [_tenant(m) for m in conn.execute(select(tenants).order_by(tenants.c.id)).mappings()]


@dataclass(frozen=True, slots=True)
class InstructionRow:
    """One stored version of a tenant's processing instruction (content as validated JSON)."""

    tenant: str
    version: int
    content: dict[str, Any]
    content_hash: str
    created: datetime


def add_instruction(
    conn: Connection,
    *,
    tenant: str,
    version: int,
    content: Mapping[str, Any],
    content_hash: str,
    now: datetime,
) -> InstructionRow:
    """Store an instruction version. Versions are immutable: storing a version again with other
    content is a :class:`ConfigError` (bump the version); the same content again is a no-op."""
    existing = get_instruction(conn, tenant, version)
    if existing is not None:
        if existing.content_hash != content_hash:
            raise ConfigError(
                f"instruction v{version} of tenant {tenant!r} exists with other content; "
                "store the change as a new version"
            )
        return existing
    conn.execute(
        instructions.insert().values(
            tenant=tenant, version=version, content=dict(content), content_hash=content_hash, created=now
        )
    )
    return InstructionRow(tenant, version, dict(content), content_hash, now)


def get_instruction(conn: Connection, tenant: str, version: int) -> InstructionRow | None:
    m = (
        conn.execute(
            select(instructions).where(instructions.c.tenant == tenant, instructions.c.version == version)
        )
        .mappings()
        .one_or_none()
    )
    if m is None:
        return None
    return InstructionRow(
        m["tenant"], m["version"], dict(m["content"]), m["content_hash"], _req(m["created"])
    )


def latest_instruction(conn: Connection, tenant: str) -> InstructionRow | None:
    """The tenant's highest stored instruction version (the one in force for new runs), or None."""
    m = (
        conn.execute(
            select(instructions)
            .where(instructions.c.tenant == tenant)
            .order_by(instructions.c.version.desc())
            .limit(1)
        )
        .mappings()
        .one_or_none()
    )
    if m is None:
        return None
    return InstructionRow(
        m["tenant"], m["version"], dict(m["content"]), m["content_hash"], _req(m["created"])
    )


# ---- syncs -----------------------------------------------------------------------------------


class SyncSpec(BaseModel):
    """What a sync moves: source stream → destination stream under one instruction version.

    ``mapping`` is {source field: destination field}. The destination's ``destination_id_property``
    (the upsert key, e.g. HubSpot ``email`` or Salesforce ``External_Id__c``) is filled from the
    source field ``source_key_property``. ``source_endpoint``/``destination_endpoint`` name the
    registry endpoint instance (e.g. ``eu``, ``eu1``, ``na1``) when the connection URL does not
    tell (a Salesforce My Domain, the sandbox).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=128)
    id: str = Field(min_length=1, max_length=128)
    name: str = ""
    source_connection_id: str
    source_stream: str
    source_endpoint: str | None = None
    destination_connection_id: str
    destination_stream: str
    destination_endpoint: str | None = None
    mapping: dict[str, str] = Field(min_length=1)
    destination_id_property: str
    source_key_property: str
    transforms: tuple[str, ...] = ()
    instruction_version: int = Field(ge=1)
    default_mode: str | None = None


@dataclass(frozen=True, slots=True)
class SyncRow:
    """A stored sync with its state (cursor, last run, status)."""

    spec: SyncSpec
    cursor: StreamState | None
    last_run_id: str | None
    status: str
    created: datetime
    updated: datetime


def create_sync(conn: Connection, spec: SyncSpec, *, now: datetime, status: str = "idle") -> SyncRow:
    """Insert a sync (no cursor yet: its first run is a full read)."""
    if get_sync(conn, spec.tenant, spec.id) is not None:
        raise ConfigError(f"sync {spec.id!r} of tenant {spec.tenant!r} already exists")
    values = spec.model_dump()
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
    spec = SyncSpec.model_validate({k: m[k] for k in SyncSpec.model_fields})
    cursor = None if m["cursor"] is None else StreamState.model_validate(m["cursor"])
    return SyncRow(spec, cursor, m["last_run_id"], m["status"], _req(m["created"]), _req(m["updated"]))


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
    conn.execute(update(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id).values(**values))


def set_sync_status(
    conn: Connection, tenant: str, id: str, status: str, *, now: datetime, last_run_id: str | None = None
) -> None:
    """Set the sync's status (and last run) without touching its cursor."""
    values: dict[str, Any] = {"status": status, "updated": now}
    if last_run_id is not None:
        values["last_run_id"] = last_run_id
    conn.execute(update(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id).values(**values))


def set_sync_instruction(conn: Connection, tenant: str, id: str, version: int, *, now: datetime) -> None:
    """Make the sync cite instruction ``version`` (the controller re-issued its instruction); a
    :class:`ConfigError` if the tenant has not stored that version."""
    if get_instruction(conn, tenant, version) is None:
        raise ConfigError(f"tenant {tenant!r} has no instruction v{version}; store it first")
    where = (syncs.c.tenant == tenant, syncs.c.id == id)
    conn.execute(update(syncs).where(*where).values(instruction_version=version, updated=now))


def set_sync_connections(
    conn: Connection, tenant: str, id: str, *, source: str, destination: str, now: datetime
) -> bool:
    """Point the sync at other connections of its tenant (e.g. the CRMs were connected again).

    A new *source* connection may be another org or portal, where the stored cursor means nothing:
    it is cleared, so the next run reads in full. Returns whether anything changed; a
    :class:`ConfigError` if the sync or a connection is unknown or belongs to another tenant."""
    from store.connections import get_connection

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
    conn.execute(
        update(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id).values(**values, updated=now)
    )
    return True


def set_sync_mapping(
    conn: Connection, tenant: str, id: str, mapping: Mapping[str, str], *, now: datetime
) -> None:
    """Replace the sync's field mapping {source field: destination field} (e.g. after a source field
    was renamed); a :class:`ConfigError` if it is empty."""
    if not mapping:
        raise ConfigError(f"sync {id!r} needs at least one mapped field")
    where = (syncs.c.tenant == tenant, syncs.c.id == id)
    conn.execute(update(syncs).where(*where).values(mapping=dict(mapping), updated=now))


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
    conn.execute(update(syncs).where(syncs.c.tenant == tenant, syncs.c.id == id).values(accepted_types=value))


# ---- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run of a sync. ``counts`` is a :class:`~schemas.sync.RunCounts` dump."""

    run_id: str
    tenant: str
    sync_id: str
    mode: str
    trigger: str
    started: datetime
    finished: datetime | None
    status: str
    counts: dict[str, int]
    message: str


def _run(m: Any) -> RunRow:
    return RunRow(
        m["run_id"],
        m["tenant"],
        m["sync_id"],
        m["mode"],
        m["trigger"],
        _req(m["started"]),
        _aware(m["finished"]),
        m["status"],
        dict(m["counts"]),
        m["message"],
    )


def start_run(
    conn: Connection,
    *,
    run_id: str,
    tenant: str,
    sync_id: str,
    mode: str,
    trigger: str,
    status: str,
    now: datetime,
    message: str = "",
) -> RunRow:
    """Record a run as started (idempotent: a retried plan updates mode/status/message of the same run)."""
    existing = get_run(conn, run_id)
    if existing is None:
        conn.execute(
            sync_runs.insert().values(
                run_id=run_id,
                tenant=tenant,
                sync_id=sync_id,
                mode=mode,
                trigger=trigger,
                started=now,
                finished=None,
                status=status,
                counts={},
                message=message[:1000],
            )
        )
    else:
        if (existing.tenant, existing.sync_id) != (tenant, sync_id):
            raise ConfigError(f"run id {run_id!r} belongs to another sync")
        conn.execute(
            update(sync_runs)
            .where(sync_runs.c.run_id == run_id)
            .values(mode=mode, status=status, message=message[:1000])
        )
    run = get_run(conn, run_id)
    assert run is not None
    return run


def finish_run(
    conn: Connection,
    run_id: str,
    *,
    status: str,
    counts: Mapping[str, int],
    message: str,
    now: datetime,
) -> None:
    """Close a run with its final status, counts and a message (no PII)."""
    conn.execute(
        update(sync_runs)
        .where(sync_runs.c.run_id == run_id)
        .values(status=status, counts=dict(counts), message=message[:1000], finished=now)
    )


def set_planned_schema(conn: Connection, run_id: str, schema: Mapping[str, str]) -> None:
    """Record the source schema (field → describe type) the run was planned with."""
    value = dict(sorted(schema.items()))
    conn.execute(update(sync_runs).where(sync_runs.c.run_id == run_id).values(planned_schema=value))


def run_schema(conn: Connection, run_id: str) -> tuple[dict[str, str], list[str]] | None:
    """The run's planned source schema and the drift it reported so far; None if none was recorded."""
    stmt = select(sync_runs.c.planned_schema, sync_runs.c.drift).where(sync_runs.c.run_id == run_id)
    row = conn.execute(stmt).one_or_none()
    if row is None or not isinstance(row[0], dict):
        return None
    return {str(k): str(v) for k, v in row[0].items()}, [str(d) for d in (row[1] or [])]


def add_run_drift(conn: Connection, run_id: str, lines: Sequence[str]) -> None:
    """Remember drift the run reported (so each change is reported once per run)."""
    if not lines:
        return
    current = run_schema(conn, run_id)
    seen = current[1] if current else []
    merged = [*seen, *(x for x in lines if x not in seen)]
    conn.execute(update(sync_runs).where(sync_runs.c.run_id == run_id).values(drift=merged))


def get_run(conn: Connection, run_id: str) -> RunRow | None:
    m = conn.execute(select(sync_runs).where(sync_runs.c.run_id == run_id)).mappings().one_or_none()
    return None if m is None else _run(m)


def list_runs(conn: Connection, tenant: str, sync_id: str, *, limit: int = 50) -> list[RunRow]:
    """The sync's runs, newest first."""
    stmt = (
        select(sync_runs)
        .where(sync_runs.c.tenant == tenant, sync_runs.c.sync_id == sync_id)
        .order_by(sync_runs.c.started.desc(), sync_runs.c.run_id.desc())
        .limit(limit)
    )
    return [_run(m) for m in conn.execute(stmt).mappings()]


# ---- staging ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StagedPart:
    """One sealed part of a staged batch: records (and deleted keys) between pull and push."""

    batch_id: str
    part: int
    tenant: str
    sync_id: str
    run_id: str
    seq: int
    sealed: bytes
    records: int
    deleted: int
    deleted_keys: bytes | None
    created: datetime
    expires_at: datetime


def put_staged(conn: Connection, part: StagedPart) -> None:
    """Insert one staged part (replacing a leftover of a failed attempt with the same id)."""
    conn.execute(
        delete(staging_batches).where(
            staging_batches.c.batch_id == part.batch_id, staging_batches.c.part == part.part
        )
    )
    conn.execute(
        staging_batches.insert().values(
            batch_id=part.batch_id,
            part=part.part,
            tenant=part.tenant,
            sync_id=part.sync_id,
            run_id=part.run_id,
            seq=part.seq,
            sealed=part.sealed,
            records=part.records,
            deleted=part.deleted,
            deleted_keys=part.deleted_keys,
            created=part.created,
            expires_at=part.expires_at,
        )
    )


def _staged(m: Any) -> StagedPart:
    sealed = _bytes(m["sealed"])
    assert sealed is not None
    return StagedPart(
        m["batch_id"],
        m["part"],
        m["tenant"],
        m["sync_id"],
        m["run_id"],
        m["seq"],
        sealed,
        m["records"],
        m["deleted"],
        _bytes(m["deleted_keys"]),
        _req(m["created"]),
        _req(m["expires_at"]),
    )


def get_staged(conn: Connection, tenant: str, batch_id: str, *, part: int | None = None) -> list[StagedPart]:
    """The parts of a staged batch of ``tenant`` in part order (one part if ``part`` is given)."""
    stmt = select(staging_batches).where(
        staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id
    )
    if part is not None:
        stmt = stmt.where(staging_batches.c.part == part)
    return [_staged(m) for m in conn.execute(stmt.order_by(staging_batches.c.part)).mappings()]


def staged_parts(conn: Connection, tenant: str, batch_id: str) -> list[int]:
    """Part numbers of a staged batch (no blobs read)."""
    stmt = (
        select(staging_batches.c.part)
        .where(staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id)
        .order_by(staging_batches.c.part)
    )
    return [int(p) for p in conn.execute(stmt).scalars()]


def delete_staged(conn: Connection, tenant: str, batch_id: str, *, keep: Iterable[int] | None = None) -> int:
    """Delete a staged batch of ``tenant`` (all parts, or all but ``keep``); returns parts deleted."""
    stmt = delete(staging_batches).where(
        staging_batches.c.tenant == tenant, staging_batches.c.batch_id == batch_id
    )
    kept = list(keep) if keep is not None else []
    if kept:
        stmt = stmt.where(staging_batches.c.part.not_in(kept))
    return int(conn.execute(stmt).rowcount)


def delete_staged_for_run(conn: Connection, tenant: str, sync_id: str, run_id: str) -> int:
    """Delete every staged part of one run (cancellation cleanup); returns how many."""
    stmt = delete(staging_batches).where(
        staging_batches.c.tenant == tenant,
        staging_batches.c.sync_id == sync_id,
        staging_batches.c.run_id == run_id,
    )
    return int(conn.execute(stmt).rowcount)


def purge_expired_staging(conn: Connection, *, now: datetime, tenant: str | None = None) -> int:
    """Delete staged parts whose retention ended (``expires_at <= now``), of every tenant or of
    ``tenant`` only; returns how many."""
    stmt = delete(staging_batches).where(staging_batches.c.expires_at <= now)
    if tenant is not None:
        stmt = stmt.where(staging_batches.c.tenant == tenant)
    return int(conn.execute(stmt).rowcount)


# ---- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the destination refused. ``id`` is deterministic (batch, part, position), so a retried
    push records the same failure once."""

    id: str
    tenant: str
    sync_id: str
    run_id: str
    batch_id: str
    record_key_hash: str
    sealed_record: bytes
    error_code: str
    error_message: str
    created: datetime


def add_dead_letters(conn: Connection, letters: Sequence[DeadLetter]) -> int:
    """Insert dead letters whose id is not stored yet; returns how many were new.

    A record refused again under a new id (a later run or batch of the same sync) replaces its
    earlier letter: a sync holds one letter per refused record, its latest refusal — so re-running
    a sync over the same bad records does not multiply them."""
    if not letters:
        return 0
    ids = [d.id for d in letters]
    existing: set[str] = set()
    for chunk in _chunks(ids):
        existing.update(conn.execute(select(dead_letters.c.id).where(dead_letters.c.id.in_(chunk))).scalars())
    new = [d for d in letters if d.id not in existing]
    by_sync: dict[tuple[str, str], list[str]] = {}
    for d in new:
        by_sync.setdefault((d.tenant, d.sync_id), []).append(d.record_key_hash)
    for (tenant, sync_id), keys in by_sync.items():
        for chunk in _chunks(keys):
            conn.execute(
                dead_letters.delete().where(
                    dead_letters.c.tenant == tenant,
                    dead_letters.c.sync_id == sync_id,
                    dead_letters.c.record_key_hash.in_(chunk),
                )
            )
    if new:
        conn.execute(
            dead_letters.insert(),
            [
                {
                    "id": d.id,
                    "tenant": d.tenant,
                    "sync_id": d.sync_id,
                    "run_id": d.run_id,
                    "batch_id": d.batch_id,
                    "record_key_hash": d.record_key_hash,
                    "sealed_record": d.sealed_record,
                    "error_code": d.error_code[:128],
                    "error_message": d.error_message[:500],
                    "created": d.created,
                }
                for d in new
            ],
        )
    return len(new)


def list_dead_letters(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    run_id: str | None = None,
    limit: int = 1000,
    code: str | None = None,
    batch_id: str | None = None,
) -> list[DeadLetter]:
    """Dead letters of a sync (of one run or staged batch, with one error code), oldest first."""
    stmt = select(dead_letters).where(dead_letters.c.tenant == tenant, dead_letters.c.sync_id == sync_id)
    if run_id is not None:
        stmt = stmt.where(dead_letters.c.run_id == run_id)
    if batch_id is not None:
        stmt = stmt.where(dead_letters.c.batch_id == batch_id)
    if code is not None:
        stmt = stmt.where(dead_letters.c.error_code == code)
    stmt = stmt.order_by(dead_letters.c.created, dead_letters.c.id).limit(limit)
    out = []
    for m in conn.execute(stmt).mappings():
        sealed = _bytes(m["sealed_record"])
        assert sealed is not None
        out.append(
            DeadLetter(
                m["id"],
                m["tenant"],
                m["sync_id"],
                m["run_id"],
                m["batch_id"],
                m["record_key_hash"],
                sealed,
                m["error_code"],
                m["error_message"],
                _req(m["created"]),
            )
        )
    return out


def list_quarantined(
    conn: Connection,
    tenant: str,
    sync_id: str,
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
    limit: int = 1000,
) -> list[DeadLetter]:
    """Quarantined records of a sync (of one run / staged batch), oldest first: sealed, with the
    reason in clear."""
    return list_dead_letters(
        conn, tenant, sync_id, run_id=run_id, batch_id=batch_id, limit=limit, code=QUARANTINED
    )


def count_quarantined(conn: Connection, tenant: str, sync_id: str, *, run_id: str | None = None) -> int:
    return count_dead_letters(conn, tenant, sync_id, run_id=run_id, code=QUARANTINED)


def dead_letter_key_hashes(conn: Connection, tenant: str, sync_id: str, batch_id: str) -> set[str]:
    """Keyed hashes of the records of one staged batch that were dead-lettered."""
    stmt = select(dead_letters.c.record_key_hash).where(
        dead_letters.c.tenant == tenant,
        dead_letters.c.sync_id == sync_id,
        dead_letters.c.batch_id == batch_id,
    )
    return {str(h) for h in conn.execute(stmt).scalars()}


def count_dead_letters(
    conn: Connection, tenant: str, sync_id: str, *, run_id: str | None = None, code: str | None = None
) -> int:
    stmt = (
        select(func.count())
        .select_from(dead_letters)
        .where(dead_letters.c.tenant == tenant, dead_letters.c.sync_id == sync_id)
    )
    if run_id is not None:
        stmt = stmt.where(dead_letters.c.run_id == run_id)
    if code is not None:
        stmt = stmt.where(dead_letters.c.error_code == code)
    return int(conn.execute(stmt).scalar_one())


def purge_dead_letters(conn: Connection, tenant: str, *, before: datetime) -> int:
    """Delete the tenant's dead letters created before ``before`` (their retention ended); returns
    how many."""
    stmt = delete(dead_letters).where(dead_letters.c.tenant == tenant, dead_letters.c.created < before)
    return int(conn.execute(stmt).rowcount)


# ---- id map ----------------------------------------------------------------------------------


def upsert_id_map(
    conn: Connection, tenant: str, sync_id: str, pairs: Sequence[tuple[str, str]], *, now: datetime
) -> None:
    """Record source key hash → destination id (insert or replace) for many records at once."""
    if not pairs:
        return
    rows = [
        {"tenant": tenant, "sync_id": sync_id, "source_key_hash": h, "destination_id": d, "updated": now}
        for h, d in dict(pairs).items()  # last mapping of a key wins within one call
    ]
    dialect = conn.dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(id_map)
        stmt: Any = pg.on_conflict_do_update(
            index_elements=["tenant", "sync_id", "source_key_hash"],
            set_={"destination_id": pg.excluded.destination_id, "updated": pg.excluded.updated},
        )
    elif dialect == "sqlite":
        lite = sqlite.insert(id_map)
        stmt = lite.on_conflict_do_update(
            index_elements=["tenant", "sync_id", "source_key_hash"],
            set_={"destination_id": lite.excluded.destination_id, "updated": lite.excluded.updated},
        )
    else:  # pragma: no cover - make_engine accepts only these two
        raise ConfigError(f"id_map upsert is not implemented for {dialect}")
    conn.execute(stmt, rows)


def lookup_id_map(conn: Connection, tenant: str, sync_id: str, hashes: Sequence[str]) -> dict[str, str]:
    """Destination ids of the given source key hashes (hashes never mapped are absent)."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(dict.fromkeys(hashes))):
        stmt = select(id_map.c.source_key_hash, id_map.c.destination_id).where(
            id_map.c.tenant == tenant, id_map.c.sync_id == sync_id, id_map.c.source_key_hash.in_(chunk)
        )
        out.update({str(r[0]): str(r[1]) for r in conn.execute(stmt)})
    return out


def delete_id_map(conn: Connection, tenant: str, sync_id: str, hashes: Sequence[str]) -> int:
    """Forget mappings (after their destination records were deleted); returns how many."""
    n = 0
    for chunk in _chunks(list(hashes)):
        n += int(
            conn.execute(
                delete(id_map).where(
                    id_map.c.tenant == tenant,
                    id_map.c.sync_id == sync_id,
                    id_map.c.source_key_hash.in_(chunk),
                )
            ).rowcount
        )
    return n


def purge_id_map(conn: Connection, tenant: str, *, before: datetime) -> int:
    """Forget the tenant's mappings last written before ``before`` (their retention ended); a later
    source delete of such a record is then counted as not at the destination. Returns how many."""
    stmt = delete(id_map).where(id_map.c.tenant == tenant, id_map.c.updated < before)
    return int(conn.execute(stmt).rowcount)
