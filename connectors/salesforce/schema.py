"""Describe results → crmhub schemas, and which fields a read selects.

Compound fields (``MailingAddress``, geolocations) are never selected: a request for one selects
its component fields instead (``MailingStreet``, ``MailingCity``...), on the REST and the Bulk
path alike, so a record has the same flat shape whichever path read it (Bulk API 2.0 refuses
compound fields: https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/queries.htm).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.connector import FieldSpec, StreamSchema

__all__ = [
    "COMPOUND_TYPES",
    "CURSOR_FIELD",
    "FieldPlan",
    "csv_value",
    "plan_fields",
    "rest_datetime",
    "stream_schema",
]

COMPOUND_TYPES = frozenset({"address", "location"})
CURSOR_FIELD = "SystemModstamp"
_INT_TYPES = frozenset({"int", "long"})
_FLOAT_TYPES = frozenset({"double", "currency", "percent"})


def stream_schema(stream: str, fields: Sequence[Mapping[str, Any]]) -> StreamSchema:
    """The :class:`StreamSchema` of a describe ``fields`` list."""
    specs = []
    for f in fields:
        ftype = str(f["type"])
        compound = f.get("compoundFieldName")
        specs.append(
            FieldSpec(
                name=str(f["name"]),
                type=ftype,
                label=str(f.get("label") or ""),
                nullable=bool(f.get("nillable", True)),
                writable=bool(f.get("createable") or f.get("updateable")),
                unique=bool(f.get("unique")),
                external_id=bool(f.get("externalId")),
                compound=compound if isinstance(compound, str) else None,
                is_compound=ftype in COMPOUND_TYPES,
                # required on create: not nillable, createable and not defaulted by the org (the
                # describe field properties: https://developer.salesforce.com/docs/atlas.en-us.api.meta/
                # api/sforce_api_calls_describesobjects_describesobjectresult.htm#field)
                required=not f.get("nillable", True)
                and bool(f.get("createable"))
                and not f.get("defaultedOnCreate"),
            )
        )
    return StreamSchema(stream=stream, fields=tuple(specs))


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """What one read selects and returns.

    ``select`` lists API names for the SELECT clause (Id and SystemModstamp first, IsDeleted and
    MasterRecordId for incremental reads); ``output`` the fields each returned record carries;
    ``types`` their describe types; ``missing`` requested names the schema does not have (dropped,
    reported as drift).
    """

    select: tuple[str, ...]
    output: tuple[str, ...]
    types: Mapping[str, str]
    missing: tuple[str, ...]


def plan_fields(
    fields: Sequence[Mapping[str, Any]], requested: Sequence[str], *, with_deleted: bool
) -> FieldPlan:
    """Resolve ``requested`` (case-insensitive) against describe ``fields``; compounds → components."""
    by_lower = {str(f["name"]).lower(): f for f in fields}
    components: dict[str, list[str]] = {}
    for f in fields:
        parent = f.get("compoundFieldName")
        if isinstance(parent, str) and str(f["type"]) not in COMPOUND_TYPES:
            components.setdefault(parent.lower(), []).append(str(f["name"]))
    out: list[str] = []
    missing: list[str] = []
    for name in ("Id", CURSOR_FIELD, *requested):
        spec = by_lower.get(name.lower())
        if spec is None:
            missing.append(name)
            continue
        ftype = str(spec["type"])
        names = components.get(name.lower(), []) if ftype in COMPOUND_TYPES else [str(spec["name"])]
        out.extend(n for n in names if n not in out)
    select = list(out)
    # Reads that report deletes also say which deleted rows lost a merge (MasterRecordId).
    for extra in ("IsDeleted", "MasterRecordId"):
        if with_deleted and extra.lower() in by_lower and extra not in select:
            select.append(extra)
    types = {n: str(by_lower[n.lower()]["type"]) for n in select}
    return FieldPlan(tuple(select), tuple(out), types, tuple(missing))


def rest_datetime(text: str) -> str:
    """A Salesforce dateTime in the REST API's form, ``2024-01-01T00:00:00.000+0000``."""
    u = dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}+0000"
    )


def csv_value(text: str, ftype: str) -> Any:
    """A Bulk API CSV cell typed back by its describe type (as the REST API's JSON would give it).

    Empty cells are ``None`` (Salesforce stores no empty strings); ValueError on a cell that does
    not fit its type.
    """
    if text == "":
        return None
    if ftype == "boolean":
        if text not in ("true", "false"):
            raise ValueError("not a boolean")
        return text == "true"
    if ftype in _INT_TYPES:
        return int(text)
    if ftype in _FLOAT_TYPES:
        return float(text)
    if ftype == "datetime":
        return rest_datetime(text)
    return text
