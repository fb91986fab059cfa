"""Creating a sync: the one check ``crmhub sync create`` and the web app's new-sync form share, and
what the form shows while a user fills it in.

A new sync is stored only if (:meth:`SyncSetup.check`, then insert in one transaction):

* its tenant exists, the instruction version it cites is one the tenant stored, and both its
  connections exist *and belong to that tenant* — a sync can never read from or write to another
  controller's CRM (:func:`check_new_sync`, store reads only);
* the destination is another connection than the source, unless the user says they mean it
  (``same_connection``: the web form's checkbox, ``crmhub sync create --same-connection``);
* the write mode is one the destination can honour (``archive`` needs HubSpot:
  :func:`schemas.sync.write_mode_refusal`);
* both objects are among the connection's live streams (:meth:`Connector.streams`) — a typo is
  refused with the closest names (``did you mean Contact?``, :mod:`difflib`) — and the destination
  object is writable;
* every mapped source field (and the key) is a field of the live source schema
  (:meth:`Connector.describe`) *and* allowed by the instruction (the plan check a run makes,
  :func:`services.syncconfig.check_covers`); every destination field exists and is writable, the
  upsert key included; every field the destination requires on create is mapped;
* each connection's region is known: the sync's named endpoint instance, else the one the vendor
  said at connect (asked again here if the connect could not:
  :meth:`services.connectors.ConnectionConnectors.locate`),
  else the host's — and is one the subprocessor registry lists. So a sync whose optional fields are
  left empty is not refused at run time for its region.

A refusal is a :class:`NewSyncRefused` naming the field of the definition at fault and the fix;
``unknown`` marks a refusal about something the tenant does not have (the web app answers those
like any unknown id: 404). Messages name objects and fields, never values.

:meth:`SyncSetup.draft` is the mapping editor's content: the instruction-allowlisted source fields
with their types beside the destination's writable fields, auto-matched by name or label, with type
mismatches and required destination fields flagged.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection, Engine

from connectors.base import Connector
from governance.policy import ProcessingInstruction, default_registry
from governance.registry import Endpoint, Registry
from schemas.connector import FieldSpec, StreamSchema, StreamSpec
from schemas.errors import ConfigError, PolicyError
from schemas.sync import relationship_mode_refusal, write_mode_refusal
from services.syncconfig import NotCovered, check_covers
from store import connections as connection_store
from store import instructions as instruction_store
from store import syncs as sync_store
from store import tenants as tenant_store
from store.associations import JUNCTION_SEPARATOR, LABEL_MARK, is_junction, is_relationship
from store.connections import ConnectionRow
from store.syncs import SyncRow, SyncSpec

__all__ = [
    "Connectors",
    "FieldRow",
    "MappingDraft",
    "NewSyncRefused",
    "SyncSetup",
    "check_new_sync",
    "suggest",
    "type_family",
    "type_mismatch",
]

_SUGGESTIONS = 3


class Connectors(Protocol):
    """What the checks need of :class:`services.connectors.ConnectionConnectors`."""

    def __call__(self, connection_id: str) -> Connector: ...

    def locate(self, connection_id: str) -> str | None: ...


class NewSyncRefused(ConfigError):
    """The sync definition cannot be stored: ``field`` names the part at fault (``tenant``,
    ``instruction_version``, ``source_connection_id``, ``destination_connection_id``,
    ``source_stream``, ``destination_stream``, ``mapping``, ``source_key_property``,
    ``destination_id_property``, ``source_endpoint``, ``destination_endpoint``); ``unknown``: it
    names something the tenant does not have."""

    def __init__(self, message: str, *, field: str, unknown: bool = True) -> None:
        super().__init__(f"{field}: {message}", code=f"sync_refused.{field}")
        self.field = field
        self.unknown = unknown


def suggest(name: str, choices: Iterable[str], shown: Mapping[str, str] | None = None) -> str:
    """``"; did you mean Contact?"`` for the choices closest to ``name`` (case-insensitive), or ``""``;
    ``shown`` names what a matched choice suggests instead (an alias → its object's name)."""
    by_folded: dict[str, str] = {}
    for c in choices:
        by_folded.setdefault(c.casefold(), (shown or {}).get(c, c))
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=_SUGGESTIONS, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(dict.fromkeys(by_folded[c] for c in close)) + "?"


def _listed(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" … ({len(names)} in all)" if len(names) > limit else "")


# ---- types ----------------------------------------------------------------------------------------

# Describe types (Salesforce describe ``type``, HubSpot property ``type``) by what values they hold.
_FAMILY = {
    "boolean": "bool",
    "bool": "bool",
    "int": "number",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "long": "number",
    "number": "number",
    "date": "time",  # date ↔ datetime convert (connectors.values)
    "datetime": "time",
}


def type_family(describe_type: str) -> str:
    """``text``, ``number``, ``bool`` or ``time``: what values a describe type holds."""
    return _FAMILY.get(describe_type.lower(), "text")


def type_mismatch(source_type: str, destination_type: str) -> str | None:
    """Why a ``source_type`` value may not fit a ``destination_type`` field (``None``: it fits).
    Anything fits a text field; numbers, booleans and dates fit only their own kind (the editor's
    script, ``api/web/static/new_sync.js``, applies the same rule as the user picks)."""
    dst = type_family(destination_type)
    src = type_family(source_type)
    if dst == "text" or src == dst:
        return None
    return f"{source_type} values into a {destination_type} field"


# ---- the mapping editor ---------------------------------------------------------------------------


def _folded(text: str) -> str:
    """``First Name`` / ``FirstName`` / ``firstname`` / ``First_Name__c`` → ``firstname``."""
    return re.sub(r"[^a-z0-9]", "", text.casefold().removesuffix("__c"))


@dataclass(frozen=True)
class FieldRow:
    """One allowlisted source field in the mapping editor, with the destination field it matched."""

    source: FieldSpec
    destination: FieldSpec | None
    mismatch: str | None  # a type mismatch with the matched destination field


@dataclass(frozen=True)
class MappingDraft:
    """The mapping editor for ``source_stream`` → ``destination_stream``: ``rows`` (the source fields
    the instruction allows, in its order), the destination's writable fields, the fields it requires
    on create, and the suggested keys (``source_key`` fills ``destination_id``)."""

    source_stream: str
    destination_stream: str
    rows: tuple[FieldRow, ...]
    destination_fields: tuple[FieldSpec, ...]
    required: tuple[str, ...]
    destination_id: str | None
    source_key: str | None
    not_in_source: tuple[str, ...]  # fields the instruction allows that the source does not have

    def suggested(self) -> dict[str, str]:
        """{source field: destination field} of the auto-matched rows."""
        return {r.source.name: r.destination.name for r in self.rows if r.destination is not None}

    def unmapped_required(self, mapping: Mapping[str, str]) -> tuple[str, ...]:
        chosen = set(mapping.values()) | ({self.destination_id} if self.destination_id else set())
        return tuple(f for f in self.required if f not in chosen)


def _match(
    source: FieldSpec, by_name: Mapping[str, FieldSpec], by_label: Mapping[str, FieldSpec]
) -> FieldSpec | None:
    for key in (_folded(source.name), _folded(source.label)):
        if key and (hit := by_name.get(key) or by_label.get(key)):
            return hit
    return None


def draft_mapping(
    source: StreamSchema,
    destination: StreamSchema,
    destination_spec: StreamSpec,
    allowed: Sequence[str],
) -> MappingDraft:
    """Auto-match the allowed source fields to the destination's writable ones by folded name, then
    label; each destination field is matched once, the first allowed field winning."""
    writable = tuple(f for f in destination.fields if f.writable)
    by_name: dict[str, FieldSpec] = {}
    by_label: dict[str, FieldSpec] = {}
    for f in writable:
        by_name.setdefault(_folded(f.name), f)
        if f.label:
            by_label.setdefault(_folded(f.label), f)
    fields = {f.name: f for f in source.fields}
    taken: set[str] = set()
    rows: list[FieldRow] = []
    for name in allowed:
        spec = fields.get(name)
        if spec is None:
            continue
        hit = _match(spec, by_name, by_label)
        if hit is not None and hit.name in taken:
            hit = None
        if hit is not None:
            taken.add(hit.name)
        rows.append(FieldRow(spec, hit, type_mismatch(spec.type, hit.type) if hit else None))
    dest_id = destination_spec.default_external_id or next((f.name for f in writable if f.external_id), None)
    key = next((r.source.name for r in rows if r.destination and r.destination.name == dest_id), None)
    return MappingDraft(
        source_stream=source.stream,
        destination_stream=destination.stream,
        rows=tuple(rows),
        destination_fields=writable,
        required=tuple(f.name for f in writable if f.required),
        destination_id=dest_id,
        source_key=key,
        not_in_source=tuple(n for n in allowed if n not in fields),
    )


# ---- the checks ---------------------------------------------------------------------------------------


def check_new_sync(conn: Connection, spec: SyncSpec) -> None:
    """Refuse ``spec`` (:class:`NewSyncRefused`) unless tenant, instruction version and both
    connections are the tenant's; reads only."""
    tenant = spec.tenant
    if tenant_store.get_tenant(conn, tenant) is None:
        raise NewSyncRefused(
            f"tenant {tenant!r} does not exist; create it with: crmhub tenant create {tenant}", field="tenant"
        )
    if instruction_store.get_instruction(conn, tenant, spec.instruction_version) is None:
        raise NewSyncRefused(
            f"tenant {tenant!r} has no instruction v{spec.instruction_version}; "
            "store it with: crmhub instruction load FILE",
            field="instruction_version",
        )
    for field, connection_id in (
        ("source_connection_id", spec.source_connection_id),
        ("destination_connection_id", spec.destination_connection_id),
    ):
        _own_connection(conn, tenant, connection_id, field)


def _own_connection(conn: Connection, tenant: str, connection_id: str, field: str) -> ConnectionRow:
    row = connection_store.get_connection(conn, connection_id)
    if row is None or row.tenant != tenant:  # another tenant's connection is not named as such
        raise NewSyncRefused(
            f"tenant {tenant!r} has no connection {connection_id!r}; use one of its own "
            f"(crmhub connections list --tenant {tenant}) or connect one (crmhub connect PROVIDER "
            f"--tenant {tenant})",
            field=field,
        )
    return row


_SAME = (
    "the destination is the source connection ({id}); pick another destination connection, or, if "
    "you mean to sync {provider} into itself, say so (web form: tick 'same connection'; CLI: "
    "--same-connection)"
)


class SyncSetup:
    """The new-sync checks and the mapping editor over the store, the tenants' live connections
    (``connectors``) and the subprocessor ``registry``. Thread-safe (each call builds and closes
    its connectors)."""

    def __init__(self, engine: Engine, connectors: Connectors, registry: Registry) -> None:
        self.engine = engine
        self.connectors = connectors
        self.registry = registry

    # -- what the form offers ---------------------------------------------------------------------

    def connection(self, tenant: str, connection_id: str, field: str) -> ConnectionRow:
        """The tenant's connection (:class:`NewSyncRefused` naming ``field`` otherwise)."""
        with self.engine.connect() as conn:
            return _own_connection(conn, tenant, connection_id, field)

    def pair(
        self, tenant: str, source_id: str, destination_id: str, same_connection: bool = False
    ) -> tuple[ConnectionRow, ConnectionRow]:
        """The tenant's source and destination connections; one connection as both is refused
        unless ``same_connection`` says it is meant."""
        with self.engine.connect() as conn:
            source = _own_connection(conn, tenant, source_id, "source_connection_id")
            dest = _own_connection(conn, tenant, destination_id, "destination_connection_id")
        if source.id == dest.id and not same_connection:
            raise NewSyncRefused(
                _SAME.format(id=source.id, provider=source.provider),
                field="destination_connection_id",
                unknown=False,
            )
        return source, dest

    def streams(
        self, tenant: str, connection_id: str, field: str = "source_connection_id"
    ) -> list[StreamSpec]:
        """The live streams (objects) of the tenant's connection."""
        self.connection(tenant, connection_id, field)
        connector = self.connectors(connection_id)
        try:
            return connector.streams()
        finally:
            connector.close()

    def stream(self, tenant: str, connection_id: str, name: str, field: str) -> StreamSpec:
        """Stream ``name`` of the connection; a refusal with the closest names for a typo."""
        row = self.connection(tenant, connection_id, field.replace("stream", "connection_id"))
        streams = self.streams(tenant, connection_id)
        for s in streams:
            if s.name == name:
                if field == "destination_stream" and not s.writable:
                    raise NewSyncRefused(
                        f"the {row.provider} object {name} cannot be written; pick a writable one",
                        field=field,
                        unknown=False,
                    )
                return s
        names = [s.name for s in streams]
        # A custom object's other names (HubSpot's objectTypeId "2-…", fullyQualifiedName) point at
        # the name a sync uses; a near miss of one suggests that name too.
        alias_of = {a: s.name for s in streams for a in s.aliases}
        named = next((n for a, n in alias_of.items() if a.casefold() == name.casefold()), None)
        if named is not None:
            hint = f"; did you mean {named}? ({name} is its {row.provider} id; a sync names the object)"
        else:
            hint = suggest(name, [*names, *alias_of], alias_of)
        raise NewSyncRefused(
            f"the {row.provider} connection has no object {name!r}{hint} (its objects: {_listed(names)})",
            field=field,
            unknown=False,
        )

    def describe(self, connection_id: str, stream: str) -> StreamSchema:
        connector = self.connectors(connection_id)
        try:
            return connector.describe(stream)
        finally:
            connector.close()

    def instruction(self, tenant: str, version: int) -> ProcessingInstruction:
        with self.engine.connect() as conn:
            row = instruction_store.get_instruction(conn, tenant, version)
        if row is None:
            raise NewSyncRefused(
                f"tenant {tenant!r} has no instruction v{version}; "
                "store it with: crmhub instruction load FILE",
                field="instruction_version",
            )
        return ProcessingInstruction.from_stored(
            row.content, content_hash=row.content_hash, version=row.version, tenant=tenant
        )

    def draft(
        self,
        tenant: str,
        instruction_version: int,
        source: tuple[str, str],
        destination: tuple[str, str],
    ) -> MappingDraft:
        """The mapping editor for (connection id, object) ``source`` → ``destination``; an unknown
        object is refused as :meth:`stream` refuses it."""
        ins = self.instruction(tenant, instruction_version)
        self.stream(tenant, source[0], source[1], "source_stream")
        dest_spec = self.stream(tenant, destination[0], destination[1], "destination_stream")
        allowed = ins.allowed_fields.get(source[1], ())
        if not allowed:
            raise NewSyncRefused(
                f"instruction v{ins.version} allows no field of {source[1]}; list the fields in "
                f"allowed_fields.{source[1]} of a new instruction version (Instruction page), or pick "
                f"an object it covers ({_listed(list(ins.allowed_fields))})",
                field="source_stream",
                unknown=False,
            )
        return draft_mapping(
            self.describe(source[0], source[1]), self.describe(*destination), dest_spec, allowed
        )

    def region(self, row: ConnectionRow, instance: str | None, field: str) -> Endpoint:
        """The registry endpoint instance the connection's data is processed at (what a run's
        transfer check uses, :func:`workflows.context.endpoint_of`): ``instance`` if named, else the
        one the vendor said (asked again now if unknown), else the host's; a refusal otherwise."""
        named = instance or row.region_instance or self.connectors.locate(row.id)
        if named:
            try:
                return self.registry.endpoint(row.provider, named)
            except PolicyError:
                known = [e.instance for e in self.registry.endpoints if e.connector == row.provider]
                raise NewSyncRefused(
                    f"the subprocessor registry lists no {row.provider} endpoint {named!r}"
                    f"{suggest(named, known) if instance else ''}; its {row.provider} endpoints: "
                    f"{_listed(known)} (register {named!r} in the registry if the data lives there)",
                    field=field,
                    unknown=False,
                ) from None
        host = urlsplit(row.instance_url).hostname if row.instance_url else None
        for e in self.registry.endpoints:
            if e.connector == row.provider and host and e.host == host:
                return e
        known = [e.instance for e in self.registry.endpoints if e.connector == row.provider]
        raise NewSyncRefused(
            f"{row.provider} did not say where connection {row.id}'s data is hosted; name its endpoint "
            f"instance ({field}: one of {_listed(known)})",
            field=field,
            unknown=False,
        )

    # -- the check --------------------------------------------------------------------------------

    def check(self, spec: SyncSpec, *, same_connection: bool = False, now: datetime | None = None) -> None:
        """Every check of the module docstring, in order (reads the store and both vendors)."""
        with self.engine.connect() as conn:
            check_new_sync(conn, spec)
        source, dest = self.pair(
            spec.tenant, spec.source_connection_id, spec.destination_connection_id, same_connection
        )
        refusal = write_mode_refusal(spec.write_mode, dest.provider) or relationship_mode_refusal(
            spec.write_mode, spec.source_stream, spec.destination_stream
        )
        if refusal is not None:
            raise NewSyncRefused(refusal, field="write_mode", unknown=False)
        ins = self.instruction(spec.tenant, spec.instruction_version)
        self.stream(spec.tenant, source.id, spec.source_stream, "source_stream")
        junction = is_junction(spec.destination_stream)
        for stream in (
            spec.destination_stream.split(JUNCTION_SEPARATOR) if junction else [spec.destination_stream]
        ):
            self.stream(spec.tenant, dest.id, stream, "destination_stream")
        self._check_source_fields(spec, source, self.describe(source.id, spec.source_stream))
        try:
            check_covers(spec, ins, at=now or datetime.now(UTC), registry=default_registry)
        except NotCovered as exc:
            field = "source_key_property" if exc.field == spec.source_key_property else "mapping"
            raise NewSyncRefused(exc.message, field=field, unknown=False) from None
        if junction:  # rows become associations between the two ends' records: no field is written
            fields = [d for d in spec.mapping.values() if not is_relationship(d)]
            if fields:
                raise NewSyncRefused(
                    f"{spec.destination_stream} is an association stream: it has no field {fields[0]!r}; map "
                    "only its two ends (@<stream>) and leave the other fields out",
                    field="mapping",
                    unknown=False,
                )
        elif LABEL_MARK in spec.mapping.values():
            raise NewSyncRefused(
                f"{LABEL_MARK} labels association pairs: map it on a sync into an association stream "
                f"(e.g. deals/contacts), not {spec.destination_stream}",
                field="mapping",
                unknown=False,
            )
        else:
            self._check_destination_fields(spec, dest, self.describe(dest.id, spec.destination_stream))
        self.region(source, spec.source_endpoint, "source_endpoint")
        self.region(dest, spec.destination_endpoint, "destination_endpoint")

    @staticmethod
    def _check_source_fields(spec: SyncSpec, row: ConnectionRow, schema: StreamSchema) -> None:
        names = schema.names()
        for field, wanted in (
            ("source_key_property", [spec.source_key_property]),
            ("mapping", [s for s in spec.mapping if not is_relationship(s)]),  # @companies: read apart
        ):
            for name in wanted:
                if name not in names:
                    raise NewSyncRefused(
                        f"the {row.provider} object {spec.source_stream} has no field {name!r}"
                        f"{suggest(name, names)}",
                        field=field,
                        unknown=False,
                    )

    @staticmethod
    def _check_destination_fields(spec: SyncSpec, row: ConnectionRow, schema: StreamSchema) -> None:
        fields = {f.name: f for f in schema.fields}
        writable = [n for n, f in fields.items() if f.writable]
        obj = f"the {row.provider} object {spec.destination_stream}"
        wanted = [("destination_id_property", spec.destination_id_property)]
        # a relationship (``@companies``) is no field: the plan checks its parent sync
        wanted += [("mapping", d) for d in spec.mapping.values() if not is_relationship(d)]
        for field, name in wanted:
            found = fields.get(name)
            if found is None:
                raise NewSyncRefused(
                    f"{obj} has no field {name!r}{suggest(name, fields)}", field=field, unknown=False
                )
            if not found.writable:
                raise NewSyncRefused(
                    f"field {name} of {obj} is read-only; map a writable field{suggest(name, writable)}",
                    field=field,
                    unknown=False,
                )
        mapped = set(spec.mapping.values()) | {spec.destination_id_property}
        missing = [f.name for f in schema.fields if f.required and f.writable and f.name not in mapped]
        if missing:
            raise NewSyncRefused(
                f"{obj} requires {', '.join(missing)} on create; map a source field to "
                f"{'it' if len(missing) == 1 else 'each'}",
                field="mapping",
                unknown=False,
            )

    def create(
        self, spec: SyncSpec, *, same_connection: bool = False, now: datetime | None = None
    ) -> SyncRow:
        """:meth:`check` ``spec`` and store it; an existing sync id of the tenant is a
        :class:`ConfigError`. The store half re-runs in the inserting transaction."""
        at = now or datetime.now(UTC)
        self.check(spec, same_connection=same_connection, now=at)
        with self.engine.begin() as conn:
            check_new_sync(conn, spec)
            return sync_store.create_sync(conn, spec, now=at)
