"""HubSpot object types and their property definitions (the Properties API's view of the portal).

Each object type has HubSpot-defined default properties plus a few custom ones (``customer_tier``,
``lead_score``, ``external_id``). The :class:`PropertyRegistry` is mutable at run time — tests add,
archive and retype properties to exercise schema drift — and thread-safe.

Schema drift through the control API (``POST /__sandbox/schema/{obj}``, :func:`change_schema`)
behaves as HubSpot does: a deleted property is archived — its values are no longer returned and
writes naming it fail; a retyped property keeps its stored values as they are (HubSpot stores every
value as a string, so a number property turned into text returns the same strings); an internal
name cannot be renamed (only the label can), so a "rename" is a new property plus the old one
archived, and the values stay with the archived one.

Shapes follow HubSpot's Property schema (``/work/shared/vendor-fixtures/hubspot/property.example.
hubspot_spec.json`` and ``properties_v3_shapes.schema.hubspot_spec.json``):
https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sandbox.base import SchemaChange, schema_control

__all__ = [
    "OBJECT_TYPES",
    "ObjectType",
    "PropertyDef",
    "PropertyRegistry",
    "change_schema",
    "iso_ms",
    "object_type",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")

# Valid (type, fieldType) pairs, per the PropertyCreate enums of hubspot-api-client 12 and
# https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide#property-type-and-fieldtype-values
TYPES = ("string", "number", "date", "datetime", "enumeration", "bool")
FIELD_TYPES = (
    "textarea",
    "text",
    "date",
    "file",
    "number",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
    "phonenumber",
    "html",
)


def iso_ms(ms: int) -> str:
    """Epoch ms → HubSpot's ISO-8601 UTC form with milliseconds, e.g. ``2023-05-30T14:29:03.906Z``."""
    secs, milli = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"


@dataclass(frozen=True)
class ObjectType:
    """A CRM object type: its path name, object type id, singular label and system property names."""

    name: str  # path segment, e.g. "contacts"
    type_id: str  # e.g. "0-1"
    singular: str  # e.g. "CONTACT" (used in HubSpot's batch error messages)
    modified_property: str  # "lastmodifieddate" for contacts, "hs_lastmodifieddate" otherwise
    default_properties: tuple[str, ...]  # returned when a request names none
    aliases: tuple[str, ...] = ()
    # Custom objects name their create date ``hs_createdate`` (sandbox.hubspot.schemas).
    created_property: str = "createdate"


# Default returned properties per object, and the last-modified property name, from the "Searchable CRM
# objects" table of https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm
# (contacts: createdate, email, firstname, hs_object_id, lastmodifieddate, lastname; companies: ...
# hs_lastmodifieddate; deals: ... hs_lastmodifieddate).
OBJECT_TYPES: dict[str, ObjectType] = {
    "contacts": ObjectType(
        "contacts",
        "0-1",
        "CONTACT",
        "lastmodifieddate",
        ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
        ("contact", "0-1"),
    ),
    "companies": ObjectType(
        "companies",
        "0-2",
        "COMPANY",
        "hs_lastmodifieddate",
        ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
        ("company", "0-2"),
    ),
    "deals": ObjectType(
        "deals",
        "0-3",
        "DEAL",
        "hs_lastmodifieddate",
        (
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ),
        ("deal", "0-3"),
    ),
}

_ALIASES = {alias.lower(): ot for ot in OBJECT_TYPES.values() for alias in (ot.name, *ot.aliases)}


def object_type(name: str) -> ObjectType | None:
    """The object type for a path segment or alias (``contacts``, ``contact``, ``0-1``, ``Contact``)."""
    return _ALIASES.get(name.lower())


@dataclass(frozen=True)
class PropertyDef:
    """One property definition; :meth:`to_json` renders HubSpot's Property shape."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    options: tuple[tuple[str, str], ...] = ()  # (label, value)
    has_unique_value: bool = False
    hubspot_defined: bool = False
    calculated: bool = False
    read_only_value: bool = False
    description: str = ""
    display_order: int = -1
    created_at_ms: int = 0
    updated_at_ms: int = 0
    archived: bool = False
    archived_at_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "updatedAt": iso_ms(self.updated_at_ms),
            "createdAt": iso_ms(self.created_at_ms),
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": [
                {"label": lab, "value": val, "displayOrder": i, "hidden": False}
                for i, (lab, val) in enumerate(self.options)
            ],
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": False,
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only_value,
            },
            "formField": not self.read_only_value,
            "dataSensitivity": "non_sensitive",
            "archived": self.archived,
        }
        if self.hubspot_defined:
            out["hubspotDefined"] = True
        if self.archived and self.archived_at_ms is not None:
            out["archivedAt"] = iso_ms(self.archived_at_ms)
        out.update(self.extra)
        return out

    @property
    def option_values(self) -> set[str]:
        return {v for _, v in self.options}


# 2019-08-06T00:00:00Z: when the sandbox portal's default properties were "created".
_PORTAL_EPOCH_MS = 1_565_049_600_000


def _p(
    name: str,
    label: str,
    type_: str = "string",
    field_type: str = "text",
    group: str = "contactinformation",
    **kw: Any,
) -> PropertyDef:
    return PropertyDef(
        name,
        label,
        type_,
        field_type,
        group,
        created_at_ms=_PORTAL_EPOCH_MS,
        updated_at_ms=_PORTAL_EPOCH_MS,
        **kw,
    )


def _system(group: str, modified: str) -> list[PropertyDef]:
    return [
        _p(
            "createdate",
            "Create Date",
            "datetime",
            "date",
            group,
            hubspot_defined=True,
            read_only_value=True,
        ),
        _p(
            modified,
            "Last Modified Date",
            "datetime",
            "date",
            group,
            hubspot_defined=True,
            calculated=True,
            read_only_value=True,
        ),
        _p(
            "hs_object_id",
            "Record ID",
            "number",
            "number",
            group,
            hubspot_defined=True,
            read_only_value=True,
        ),
        # The ids merged into a record, ";"-separated ("Merged [record] IDs":
        # https://knowledge.hubspot.com/records/merge-records); type and field type are a guess.
        _p(
            "hs_merged_object_ids",
            "Merged record IDs",
            "enumeration",
            "checkbox",
            group,
            hubspot_defined=True,
            calculated=True,
            read_only_value=True,
        ),
    ]


def _opts(*values: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, v) for v in values)


def _default_properties() -> dict[str, list[PropertyDef]]:
    hs: dict[str, Any] = {"hubspot_defined": True}
    contacts = [
        *_system("contactinformation", "lastmodifieddate"),
        _p("email", "Email", **hs),
        _p("firstname", "First Name", **hs),
        _p("lastname", "Last Name", **hs),
        _p("phone", "Phone Number", field_type="phonenumber", **hs),
        _p("jobtitle", "Job Title", **hs),
        _p("company", "Company Name", **hs),
        _p("city", "City", **hs),
        _p("country", "Country/Region", **hs),
        _p(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            options=_opts(
                "subscriber",
                "lead",
                "marketingqualifiedlead",
                "salesqualifiedlead",
                "opportunity",
                "customer",
                "evangelist",
                "other",
            ),
            **hs,
        ),
        # custom properties
        _p(
            "customer_tier",
            "Customer tier",
            "enumeration",
            "select",
            options=_opts("Gold", "Silver", "Bronze"),
        ),
        _p("lead_score", "Lead score", "number", "number"),
        _p("external_id", "External ID", has_unique_value=True),
    ]
    companies = [
        *_system("companyinformation", "hs_lastmodifieddate"),
        _p("name", "Company name", group="companyinformation", **hs),
        _p("domain", "Company Domain Name", group="companyinformation", **hs),
        _p(
            "industry",
            "Industry",
            "enumeration",
            "select",
            "companyinformation",
            options=_opts("Technology", "Manufacturing", "Retail", "Finance", "Healthcare", "Education"),
            **hs,
        ),
        _p("numberofemployees", "Number of Employees", "number", "number", "companyinformation", **hs),
        _p("annualrevenue", "Annual Revenue", "number", "number", "companyinformation", **hs),
        _p("city", "City", group="companyinformation", **hs),
        _p("country", "Country/Region", group="companyinformation", **hs),
        _p("phone", "Phone Number", group="companyinformation", field_type="phonenumber", **hs),
        _p("external_id", "External ID", group="companyinformation", has_unique_value=True),
    ]
    deals = [
        *_system("dealinformation", "hs_lastmodifieddate"),
        _p("dealname", "Deal Name", group="dealinformation", **hs),
        _p("amount", "Amount", "number", "number", "dealinformation", **hs),
        _p(
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            "dealinformation",
            options=_opts(
                "appointmentscheduled",
                "qualifiedtobuy",
                "presentationscheduled",
                "decisionmakerboughtin",
                "contractsent",
                "closedwon",
                "closedlost",
            ),
            **hs,
        ),
        _p(
            "pipeline", "Pipeline", "enumeration", "select", "dealinformation", options=_opts("default"), **hs
        ),
        _p("closedate", "Close Date", "datetime", "date", "dealinformation", **hs),
        _p("external_id", "External ID", group="dealinformation", has_unique_value=True),
    ]
    return {"contacts": contacts, "companies": companies, "deals": deals}


class PropertyError(ValueError):
    """A property-definition change HubSpot would refuse (the app maps it to a 400/409)."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


class PropertyRegistry:
    """The portal's property definitions per object type. Thread-safe; every read is a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._props: dict[str, dict[str, PropertyDef]] = {
            obj: {p.name: p for p in props} for obj, props in _default_properties().items()
        }

    def get(self, obj: str, name: str, *, include_archived: bool = False) -> PropertyDef | None:
        with self._lock:
            p = self._props.get(obj, {}).get(name)
        if p is None or (p.archived and not include_archived):
            return None
        return p

    def all(self, obj: str, *, archived: bool = False) -> list[PropertyDef]:
        """Live properties (or, with ``archived=True``, only archived ones, like the API's flag)."""
        with self._lock:
            return [p for p in self._props.get(obj, {}).values() if p.archived == archived]

    def live(self, obj: str) -> dict[str, PropertyDef]:
        with self._lock:
            return {n: p for n, p in self._props.get(obj, {}).items() if not p.archived}

    def unique_properties(self, obj: str) -> list[str]:
        return [p.name for p in self.all(obj) if p.has_unique_value]

    def add(self, obj: str, prop: PropertyDef) -> PropertyDef:
        """Create a property; a live one of the same name → :class:`PropertyError` (conflict)."""
        if not _NAME.match(prop.name):
            raise PropertyError(f"Property name '{prop.name}' is not valid")
        if prop.type not in TYPES:
            raise PropertyError(f"Property type '{prop.type}' is not valid")
        if prop.type == "enumeration" and not prop.options:
            raise PropertyError("Enumeration properties must have options")
        with self._lock:
            props = self._props.setdefault(obj, {})
            existing = props.get(prop.name)
            if existing is not None and not existing.archived:
                raise PropertyError(f"A property named '{prop.name}' already exists.", conflict=True)
            props[prop.name] = prop
        return prop

    def archive(self, obj: str, name: str, now_ms: int) -> bool:
        """Archive a property (HubSpot keeps archived definitions; values stop being readable/writable)."""
        with self._lock:
            p = self._props.get(obj, {}).get(name)
            if p is None or p.archived:
                return False
            self._props[obj][name] = replace(p, archived=True, archived_at_ms=now_ms, updated_at_ms=now_ms)
            return True

    def retype(
        self,
        obj: str,
        name: str,
        *,
        type_: str,
        field_type: str,
        options: tuple[tuple[str, str], ...] | None,
        now_ms: int,
    ) -> PropertyDef:
        if type_ not in TYPES:
            raise PropertyError(f"Property type '{type_}' is not valid")
        with self._lock:
            p = self._props.get(obj, {}).get(name)
            if p is None or p.archived:
                raise PropertyError(f"Property {name} does not exist")
            new = replace(
                p,
                type=type_,
                field_type=field_type,
                options=options if options is not None else p.options,
                updated_at_ms=now_ms,
            )
            self._props[obj][name] = new
            return new


@schema_control("hubspot")
def change_schema(sandbox: Any, obj: str, change: SchemaChange) -> dict[str, Any]:
    """Apply ``change`` to the portal's ``obj`` properties as HubSpot would (module docstring)."""
    ot = object_type(obj)
    if ot is None:
        raise KeyError(f"no object type {obj}")
    registry: PropertyRegistry = sandbox.properties
    if change.change == "add":
        sandbox.add_property(ot.name, change.field, type=change.type or "string", label=change.label)
        return {"added": change.field}
    prop = registry.get(ot.name, change.field)
    if prop is None:
        raise KeyError(f"{ot.name}.{change.field}")
    if change.change == "drop":
        sandbox.drop_property(ot.name, change.field)
        return {"dropped": change.field}
    if change.change == "retype":
        if not change.type:
            raise ValueError("a retype needs 'type'")
        sandbox.retype_property(ot.name, change.field, change.type)
        return {"retyped": change.field, "from": prop.type, "to": change.type}
    if not change.to:
        raise ValueError("a rename needs 'to'")
    options = [value for _, value in prop.options]
    sandbox.add_property(
        ot.name, change.to, type=prop.type, field_type=prop.field_type, label=change.label or prop.label,
        options=options, group_name=prop.group_name,
    )  # fmt: skip
    sandbox.drop_property(ot.name, change.field)
    return {"added": change.to, "dropped": change.field}
