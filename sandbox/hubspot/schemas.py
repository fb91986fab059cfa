"""HubSpot custom objects: the schemas API and the object types it defines at run time.

Endpoints (served by :class:`sandbox.hubspot.app.HubSpotSandbox`)::

    GET  /crm/v3/schemas                   every custom object schema of the portal ({"results": [...]})
    POST /crm/v3/schemas                   define a custom object → 201 with its schema
    GET  /crm/v3/schemas/{objectType}      one schema (by objectTypeId or fullyQualifiedName)
    (the same under /crm-object-schemas/v3/schemas, the API reference's path)

Rules, from HubSpot's custom objects guide
(https://developers.hubspot.com/docs/guides/api/crm/objects/custom-objects) and the create-schema
reference (https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/schemas/create-schema):

* a schema has ``name`` (letters, digits and underscores, starting with a letter; cannot change),
  ``labels.singular``/``labels.plural``, ``primaryDisplayProperty``, ``requiredProperties``,
  ``searchableProperties`` and ``properties`` (each at least ``name``, ``label``; ``type`` and
  ``fieldType`` default to a single-line string) — every property named in
  ``requiredProperties``/``searchableProperties``/``primaryDisplayProperty`` must be defined;
* the answer carries ``id`` (n), ``objectTypeId`` ``2-{n}`` and ``fullyQualifiedName``
  ``p{portalId}_{name}``; records are then reached through ``/crm/v3/objects/{objectTypeId}`` or
  ``/crm/v3/objects/{fullyQualifiedName}`` (the guide: "objectType: fully qualified name or object
  type ID of your schema");
* a property with ``hasUniqueValue: true`` can be the ``idProperty`` of a batch upsert, like any
  object's (https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide#upsert-records);
* reading schemas needs the ``crm.schemas.custom.read`` scope, writing them
  ``crm.schemas.custom.write``, the records ``crm.objects.custom.read``/``.write``
  (https://developers.hubspot.com/docs/apps/developer-platform/build-apps/authentication/scopes).

Custom objects get HubSpot's custom-object system properties: ``hs_object_id``, ``hs_createdate``,
``hs_lastmodifieddate`` (guess: the type/fieldType of these follows the standard objects' ones).
A second schema with the same ``name`` is refused with 409 CONFLICT (guess: HubSpot's wording is
not documented; the category is).

Creating a record enforces the schema's ``requiredProperties`` ("The names of properties that
should be required when creating an object of this type": the schemas API reference) — on
``POST /crm/v3/objects/{objectType}``, ``batch/create`` and a ``batch/upsert`` input that creates;
an update does not need them. A record without a value for one fails as HubSpot's invalid
properties do (the whole batch, 400 VALIDATION_ERROR "Property values were not valid: [...]"), one
entry per record and property: ``{"isValid": false, "error": "REQUIRED_PROPERTY_MISSING", "name":
<property>, "message": "Required property <property> is missing"}`` — a **guess**: the code and
text are not documented; the nearest on record is HubSpot's forms answer "Required field
'<objectTypeId>/<property>' is missing" (verbb/formie#2649).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot.errors import ApiError, PropertyProblem, invalid_properties
from sandbox.hubspot.schema import FIELD_TYPES, TYPES, ObjectType, PropertyDef, PropertyRegistry, iso_ms

__all__ = [
    "OBJECTS_READ_SCOPE",
    "OBJECTS_WRITE_SCOPE",
    "REQUIRED_MISSING",
    "SCHEMAS_READ_SCOPE",
    "SCHEMAS_WRITE_SCOPE",
    "CustomObject",
    "CustomSchemas",
]

SCHEMAS_READ_SCOPE = "crm.schemas.custom.read"
SCHEMAS_WRITE_SCOPE = "crm.schemas.custom.write"
OBJECTS_READ_SCOPE = "crm.objects.custom.read"
OBJECTS_WRITE_SCOPE = "crm.objects.custom.write"

REQUIRED_MISSING = "REQUIRED_PROPERTY_MISSING"  # guess: see the module docstring
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_PROP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
# The first custom object id of the sandbox portal (real ids are portal-wide sequence numbers).
_FIRST_ID = 1_000_001


@dataclass(frozen=True)
class CustomObject:
    """One custom object schema: its :class:`ObjectType` and the schema fields the API returns."""

    ot: ObjectType
    schema_id: str
    object_name: str
    singular_label: str
    plural_label: str
    primary_display: str | None
    required: tuple[str, ...]
    searchable: tuple[str, ...]
    created_at_ms: int


class CustomSchemas:
    """The portal's custom object schemas; thread-safe. Properties live in the PropertyRegistry
    under the object's fullyQualifiedName (its store key as well)."""

    def __init__(self, portal_id: int, registry: PropertyRegistry) -> None:
        self.portal_id = portal_id
        self.registry = registry
        self._lock = threading.Lock()
        self._objects: dict[str, CustomObject] = {}  # fullyQualifiedName → object
        self._next_id = _FIRST_ID

    def resolve(self, key: str, *, by_name: bool = False) -> CustomObject | None:
        """The custom object a path segment names: objectTypeId (``2-…``) or fullyQualifiedName;
        with ``by_name`` (the Python handle only) also its plain ``name``."""
        low = key.lower()
        with self._lock:
            for obj in self._objects.values():
                if low in (obj.ot.type_id, obj.ot.name.lower()) or (
                    by_name and low == obj.object_name.lower()
                ):
                    return obj
        return None

    def require(self, ot: ObjectType, created: Sequence[Mapping[str, Any]]) -> None:
        """Refuse (one 400 for the batch) records to create without a value for a required property."""
        obj = self.resolve(ot.name)
        if obj is None or not obj.required:
            return
        problems = [
            PropertyProblem.make(name, REQUIRED_MISSING, f"Required property {name} is missing")
            for values in created
            for name in obj.required
            if values.get(name) in (None, "")
        ]
        if problems:
            raise invalid_properties(problems)

    def all(self) -> list[CustomObject]:
        with self._lock:
            return list(self._objects.values())

    def create(self, body: Mapping[str, Any], now_ms: int) -> CustomObject:
        """Validate a POST /crm/v3/schemas body and define the object (400/409 as ApiError)."""
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiError(
                400, "VALIDATION_ERROR", "name must start with a letter and hold letters, digits and _ only"
            )
        labels = body.get("labels")
        if not isinstance(labels, Mapping) or not labels.get("singular") or not labels.get("plural"):
            raise ApiError(400, "VALIDATION_ERROR", "labels.singular and labels.plural are required")
        raw_props = body.get("properties")
        if not isinstance(raw_props, list) or not raw_props:
            raise ApiError(400, "VALIDATION_ERROR", "properties must list at least one property")
        group = f"{name.lower()}_information"  # the create-schema answer's groupName
        props = [self._property(p, group, now_ms) for p in raw_props]
        defined = {p.name for p in props}
        required = self._names(body, "requiredProperties", defined)
        searchable = self._names(body, "searchableProperties", defined)
        primary = body.get("primaryDisplayProperty")
        if primary is not None and primary not in defined:
            raise ApiError(
                400, "VALIDATION_ERROR", f"primaryDisplayProperty {primary} is not a defined property"
            )
        fqn = f"p{self.portal_id}_{name}"
        with self._lock:
            if any(o.object_name.lower() == name.lower() for o in self._objects.values()):
                raise ApiError(409, "CONFLICT", f"Object type with name {name} already exists")
            schema_id = str(self._next_id)
            self._next_id += 1
            ot = ObjectType(
                fqn,
                f"2-{schema_id}",
                fqn.upper(),  # guess: batch error messages name custom objects by this
                "hs_lastmodifieddate",
                tuple(
                    sorted(
                        {
                            "hs_createdate",
                            "hs_lastmodifieddate",
                            "hs_object_id",
                            *([primary] if primary else []),
                        }
                    )
                ),
                created_property="hs_createdate",
            )
            obj = CustomObject(
                ot,
                schema_id,
                name,
                str(labels["singular"]),
                str(labels["plural"]),
                str(primary) if primary else None,
                required,
                searchable,
                now_ms,
            )
            self._objects[fqn] = obj
        for prop in (*_system(group, now_ms), *props):
            self.registry.add(fqn, prop)
        return obj

    @staticmethod
    def _names(body: Mapping[str, Any], key: str, defined: set[str]) -> tuple[str, ...]:
        raw = body.get(key) or []
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            raise ApiError(400, "VALIDATION_ERROR", f"{key} must be a list of property names")
        unknown = [n for n in raw if n not in defined]
        if unknown:
            raise ApiError(400, "VALIDATION_ERROR", f"{key} names undefined properties: {', '.join(unknown)}")
        return tuple(raw)

    @staticmethod
    def _property(raw: Any, group: str, now_ms: int) -> PropertyDef:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw.get("label"):
            raise ApiError(400, "VALIDATION_ERROR", "each property needs a name and a label")
        name = str(raw["name"])
        type_ = str(raw.get("type") or "string")
        field_type = str(raw.get("fieldType") or "text")
        if not _PROP_NAME.match(name) or type_ not in TYPES or field_type not in FIELD_TYPES:
            raise ApiError(400, "VALIDATION_ERROR", f"property {name}: invalid name, type or fieldType")
        options = tuple(
            (str(o.get("label")), str(o.get("value")))
            for o in raw.get("options") or []
            if isinstance(o, Mapping)
        )
        if type_ == "enumeration" and not options:
            raise ApiError(400, "VALIDATION_ERROR", f"property {name}: an enumeration needs options")
        return PropertyDef(
            name,
            str(raw["label"]),
            type_,
            field_type,
            str(raw.get("groupName") or group),
            options=options,
            has_unique_value=bool(raw.get("hasUniqueValue")),
            description=str(raw.get("description") or ""),
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )

    def to_json(self, obj: CustomObject) -> dict[str, Any]:
        """The schema as GET /crm/v3/schemas answers it (the create-schema answer's shape)."""
        return {
            "id": obj.schema_id,
            "createdAt": iso_ms(obj.created_at_ms),
            "updatedAt": iso_ms(obj.created_at_ms),
            "archived": False,
            "name": obj.object_name,
            "labels": {"singular": obj.singular_label, "plural": obj.plural_label},
            "objectTypeId": obj.ot.type_id,
            "fullyQualifiedName": obj.ot.name,
            "metaType": "PORTAL_SPECIFIC",
            "primaryDisplayProperty": obj.primary_display,
            "requiredProperties": list(obj.required),
            "searchableProperties": list(obj.searchable),
            "secondaryDisplayProperties": [],
            "properties": [p.to_json() for p in self.registry.all(obj.ot.name)],
            "associations": [],
        }


def _system(group: str, now_ms: int) -> list[PropertyDef]:
    def ro(name: str, label: str, type_: str, field_type: str, *, calculated: bool = False) -> PropertyDef:
        return PropertyDef(
            name,
            label,
            type_,
            field_type,
            group,
            hubspot_defined=True,
            calculated=calculated,
            read_only_value=True,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
        )

    return [
        ro("hs_object_id", "Record ID", "number", "number"),
        ro("hs_createdate", "Create Date", "datetime", "date"),
        ro("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", calculated=True),
    ]
