"""The emulated org's schema: sObject describe results for Contact, Account and Lead, mutable for drift.

Field objects carry the full key set of a real ``GET /sobjects/Contact/describe`` field (recorded
in ``describe_contact.cumulusci.full.json``) and the standard fields keep the recorded values
(labels, lengths, ``compoundFieldName``, ``soapType``...). Each object also has the custom fields
crmhub syncs: ``External_Id__c`` (externalId, unique), ``Customer_Tier__c`` (picklist) and, on
Contact and Lead, ``Lead_Score__c`` (number).

Describe resource: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm
Compound fields (address / person name; read-only, components carry ``compoundFieldName``):
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/compound_fields.htm

Schema drift (the control API's ``POST /__sandbox/schema/{obj}``, :func:`change_schema`) behaves as
an admin's change in Setup does: a deleted field is gone from describe and queries naming it fail
with INVALID_FIELD; a renamed field keeps its values under the new API name; a retyped field's
stored values are converted as Salesforce converts them — conversions that preserve data keep it
(number → text gives the number's text, text → text keeps it, text → number keeps values that are
numbers), incompatible ones set it to null (a date or date/time to or from any other type, a
checkbox or a multi-select picklist to any other type: "Conversions That Generate a Change Event",
https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/change_data_capture/cdc_field_conversion_single_event.htm).
A conversion does not bump ``SystemModstamp``.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterable
from typing import Any

from sandbox.base import SchemaChange, schema_control
from sandbox.records import RecordStore
from sandbox.salesforce.ids import KEY_PREFIXES

__all__ = ["SYSTEM_FIELDS", "Schema", "change_schema", "convert_value", "make_field"]

# Fields whose values live in the record store's columns rather than in the JSON data.
SYSTEM_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "CreatedDate"})

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "address": "urn:address",
}
_TEXT_TYPES = frozenset({"string", "picklist", "email", "phone", "textarea", "url", "id", "reference"})


def make_field(
    name: str,
    type_: str,
    label: str,
    *,
    length: int | None = None,
    nillable: bool = True,
    createable: bool = True,
    updateable: bool = True,
    custom: bool | None = None,
    external_id: bool = False,
    unique: bool = False,
    compound: str | None = None,
    picklist: Iterable[str] = (),
    reference_to: Iterable[str] = (),
    relationship_name: str | None = None,
    defaulted: bool = False,
    name_field: bool = False,
    precision: int = 0,
    scale: int = 0,
    filterable: bool = True,
    sortable: bool = True,
    extra_type_info: str | None = None,
    default_value: Any = None,
) -> dict[str, Any]:
    """A describe field object with every key Salesforce returns (values per the recorded describe)."""
    if length is None:
        length = {"id": 18, "reference": 18, "string": 255, "picklist": 255, "email": 80, "phone": 40}.get(
            type_, 0
        )
    text = type_ in _TEXT_TYPES
    if type_ in ("id", "reference"):
        byte_length = 18
    elif text:
        byte_length = length * 3
    else:
        byte_length = 0
    is_custom = name.endswith("__c") if custom is None else custom
    return {
        "aggregatable": type_ not in ("address", "textarea", "boolean"),
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": byte_length,
        "calculated": False,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": compound,
        "controllerName": None,
        "createable": createable,
        "custom": is_custom,
        "defaultValue": default_value,
        "defaultValueFormula": None,
        "defaultedOnCreate": defaulted,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": external_id,
        "extraTypeInfo": extra_type_info,
        "filterable": filterable and type_ != "address",
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": type_ not in ("address", "textarea", "double", "datetime", "currency", "percent"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": type_ == "id" or external_id or (type_ == "email"),
        "inlineHelpText": None,
        "label": label,
        "length": length,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": name_field,
        "namePointing": False,
        "nillable": nillable,
        "permissionable": nillable and createable and not name_field,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in picklist
        ],
        "polymorphicForeignKey": False,
        "precision": precision,
        "queryByDistance": type_ == "address",
        "referenceTargetField": None,
        "referenceTo": list(reference_to),
        "relationshipName": relationship_name,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": scale,
        "searchPrefilterable": False,
        "soapType": _SOAP_TYPES.get(type_, "xsd:string"),
        "sortable": sortable and type_ not in ("address", "textarea"),
        "type": type_,
        "unique": unique,
        "updateable": updateable,
        "writeRequiresMasterRead": False,
    }


def system_fields(label: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system fields every object has: (the head: Id, IsDeleted; the tail: owner and audit)."""
    return _system_head(label), _system_tail()


def _system_head(label: str) -> list[dict[str, Any]]:
    return [
        make_field(
            "Id", "id", f"{label} ID", nillable=False, createable=False, updateable=False, defaulted=True
        ),
        make_field(
            "IsDeleted",
            "boolean",
            "Deleted",
            nillable=False,
            createable=False,
            updateable=False,
            defaulted=True,
            default_value=False,
        ),
    ]


def _system_tail() -> list[dict[str, Any]]:
    def ro(name: str, type_: str, label: str, **kw: Any) -> dict[str, Any]:
        return make_field(
            name, type_, label, nillable=False, createable=False, updateable=False, defaulted=True, **kw
        )

    return [
        make_field(
            "OwnerId",
            "reference",
            "Owner ID",
            nillable=False,
            defaulted=True,
            reference_to=["User"],
            relationship_name="Owner",
        ),
        ro("CreatedDate", "datetime", "Created Date"),
        ro("CreatedById", "reference", "Created By ID", reference_to=["User"], relationship_name="CreatedBy"),
        ro("LastModifiedDate", "datetime", "Last Modified Date"),
        ro(
            "LastModifiedById",
            "reference",
            "Last Modified By ID",
            reference_to=["User"],
            relationship_name="LastModifiedBy",
        ),
        ro("SystemModstamp", "datetime", "System Modstamp"),
    ]


def _address(prefix: str, label: str, street_label: str | None = None) -> list[dict[str, Any]]:
    compound = f"{prefix}Address"
    s = "" if prefix == "" else f"{label} "
    return [
        make_field(
            f"{prefix}Street",
            "textarea",
            street_label or f"{s}Street",
            length=255,
            compound=compound,
            filterable=True,
            sortable=True,
            extra_type_info="plaintextarea",
        ),
        make_field(f"{prefix}City", "string", f"{s}City", length=40, compound=compound),
        make_field(f"{prefix}State", "string", f"{s}State/Province", length=80, compound=compound),
        make_field(f"{prefix}PostalCode", "string", f"{s}Zip/Postal Code", length=20, compound=compound),
        make_field(f"{prefix}Country", "string", f"{s}Country", length=80, compound=compound),
        make_field(f"{prefix}Latitude", "double", f"{s}Latitude", compound=compound, precision=18, scale=15),
        make_field(
            f"{prefix}Longitude", "double", f"{s}Longitude", compound=compound, precision=18, scale=15
        ),
        make_field(
            f"{prefix}GeocodeAccuracy",
            "picklist",
            f"{s}Geocode Accuracy",
            length=40,
            compound=compound,
            picklist=[
                "Address",
                "NearAddress",
                "Block",
                "Street",
                "ExtendedZip",
                "Zip",
                "Neighborhood",
                "City",
                "County",
                "State",
                "Unknown",
            ],
        ),
        make_field(
            compound,
            "address",
            f"{s}Address".strip() if prefix else "Address",
            createable=False,
            updateable=False,
        ),
    ]


def _person_name(label_last: str = "Last Name") -> list[dict[str, Any]]:
    return [
        make_field(
            "LastName",
            "string",
            label_last,
            length=80,
            nillable=False,
            compound="Name",
            extra_type_info="personname",
        ),
        make_field(
            "FirstName", "string", "First Name", length=40, compound="Name", extra_type_info="personname"
        ),
        make_field(
            "Salutation",
            "picklist",
            "Salutation",
            length=40,
            compound="Name",
            picklist=["Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx."],
        ),
        make_field(
            "Name",
            "string",
            "Full Name",
            length=121,
            nillable=False,
            createable=False,
            updateable=False,
            name_field=True,
            extra_type_info="personname",
        ),
    ]


_TIERS = ["Gold", "Silver", "Bronze"]
_LEAD_SOURCES = ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]
_INDUSTRIES = ["Technology", "Manufacturing", "Retail", "Finance", "Healthcare", "Education"]


def _custom(with_score: bool) -> list[dict[str, Any]]:
    out = [
        make_field("External_Id__c", "string", "External Id", length=64, external_id=True, unique=True),
        make_field("Customer_Tier__c", "picklist", "Customer Tier", length=255, picklist=_TIERS),
    ]
    if with_score:
        out.append(make_field("Lead_Score__c", "double", "Lead Score", precision=18, scale=0))
    return out


def _contact_fields() -> list[dict[str, Any]]:
    return [
        *_system_head("Contact"),
        _master_record("Contact"),
        make_field(
            "AccountId", "reference", "Account ID", reference_to=["Account"], relationship_name="Account"
        ),
        *_person_name(),
        *_address("Mailing", "Mailing"),
        make_field("Phone", "phone", "Business Phone", length=40),
        make_field("MobilePhone", "phone", "Mobile Phone", length=40),
        make_field("Email", "email", "Email", length=80),
        make_field("Title", "string", "Title", length=128),
        make_field("Department", "string", "Department", length=80),
        make_field("LeadSource", "picklist", "Lead Source", length=255, picklist=_LEAD_SOURCES),
        make_field("Birthdate", "date", "Birthdate"),
        make_field(
            "Description",
            "textarea",
            "Contact Description",
            length=32000,
            filterable=False,
            extra_type_info="plaintextarea",
        ),
        *_system_tail(),
        *_custom(with_score=True),
    ]


def _master_record(obj: str) -> dict[str, Any]:
    """``MasterRecordId``: set on the records deleted by losing a merge to the winner's id (Account,
    Contact and Lead are mergeable; field as recorded in ``describe_contact.cumulusci.full.json``):
    https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/apex_triggers_merge_statements.htm"""
    return make_field(
        "MasterRecordId",
        "reference",
        "Master Record ID",
        createable=False,
        updateable=False,
        reference_to=[obj],
        relationship_name="MasterRecord",
    )


def _account_fields() -> list[dict[str, Any]]:
    return [
        *_system_head("Account"),
        _master_record("Account"),
        make_field("Name", "string", "Account Name", length=255, nillable=False, name_field=True),
        make_field(
            "Type",
            "picklist",
            "Account Type",
            length=255,
            picklist=["Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"],
        ),
        make_field(
            "ParentId", "reference", "Parent Account ID", reference_to=["Account"], relationship_name="Parent"
        ),
        *_address("Billing", "Billing"),
        make_field("Phone", "phone", "Account Phone", length=40),
        make_field("Website", "url", "Website", length=255),
        make_field("Industry", "picklist", "Industry", length=255, picklist=_INDUSTRIES),
        make_field("AnnualRevenue", "currency", "Annual Revenue", precision=18, scale=0),
        make_field("NumberOfEmployees", "int", "Employees"),
        make_field(
            "Description",
            "textarea",
            "Account Description",
            length=32000,
            filterable=False,
            extra_type_info="plaintextarea",
        ),
        *_system_tail(),
        *_custom(with_score=False),
    ]


def _lead_fields() -> list[dict[str, Any]]:
    return [
        *_system_head("Lead"),
        _master_record("Lead"),
        *_person_name(),
        make_field("Title", "string", "Title", length=128),
        make_field("Company", "string", "Company", length=255, nillable=False),
        *_address("", "", street_label="Street"),
        make_field("Phone", "phone", "Phone", length=40),
        make_field("Email", "email", "Email", length=80),
        make_field("LeadSource", "picklist", "Lead Source", length=255, picklist=_LEAD_SOURCES),
        make_field(
            "Status",
            "picklist",
            "Status",
            length=255,
            nillable=False,
            defaulted=True,
            picklist=[
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ],
            default_value=None,
        ),
        make_field("Industry", "picklist", "Industry", length=255, picklist=_INDUSTRIES),
        make_field("AnnualRevenue", "currency", "Annual Revenue", precision=18, scale=0),
        make_field("NumberOfEmployees", "int", "Employees"),
        make_field(
            "IsConverted", "boolean", "Converted", nillable=False, defaulted=True, default_value=False
        ),
        *_system_tail(),
        *_custom(with_score=True),
    ]


_LABELS = {
    "Contact": ("Contact", "Contacts"),
    "Account": ("Account", "Accounts"),
    "Lead": ("Lead", "Leads"),
    "Opportunity": ("Opportunity", "Opportunities"),
    "OpportunityContactRole": ("Opportunity Contact Role", "Opportunity Contact Role"),
}
_SCOPES = {
    "Contact": [("All contacts", "everything"), ("My contacts", "mine"), ("My team's contacts", "team")],
    "Account": [("All accounts", "everything"), ("My accounts", "mine"), ("My team's accounts", "team")],
    "Lead": [("All leads", "everything"), ("My leads", "mine"), ("My team's leads", "team")],
}
# Fields the API requires on create (beyond what the describe's nillable/defaultedOnCreate says).
REQUIRED_ON_CREATE = {
    "Contact": ("LastName",),
    "Account": ("Name",),
    "Lead": ("LastName", "Company"),
    "Opportunity": ("Name", "StageName", "CloseDate"),  # sandbox.salesforce.opportunity
    "OpportunityContactRole": ("OpportunityId", "ContactId"),  # (ContactId: a guess, see there)
}


class Schema:
    """Per-org sObject schema; thread-safe. Changes show up in the next describe and query."""

    def __init__(self) -> None:
        from sandbox.salesforce.opportunity import contact_role_fields, opportunity_fields

        self._lock = threading.Lock()
        self._fields: dict[str, list[dict[str, Any]]] = {
            "Contact": _contact_fields(),
            "Account": _account_fields(),
            "Lead": _lead_fields(),
            "Opportunity": opportunity_fields(),
            "OpportunityContactRole": contact_role_fields(),
        }
        self._version = 0
        self._prefixes: dict[str, str] = {}  # custom object → key prefix
        self._labels: dict[str, tuple[str, str]] = {}

    def add_object(
        self, name: str, label: str, plural: str, fields: list[dict[str, Any]], key_prefix: str
    ) -> None:
        """Define a custom object (see :mod:`sandbox.salesforce.customobjects`)."""
        with self._lock:
            if self.canonical_object(name) is not None:
                raise ValueError(f"an object named {name} exists already")
            self._fields[name] = fields
            self._prefixes[name] = key_prefix
            self._labels[name] = (label, plural)
            self._version += 1

    def custom_count(self) -> int:
        return len(self._prefixes)

    def key_prefix(self, obj: str) -> str:
        """The object's key prefix (the first three characters of its record ids)."""
        return KEY_PREFIXES.get(obj) or self._prefixes.get(obj, "a00")

    def object_for_prefix(self, prefix: str) -> str | None:
        """The object whose record ids start with ``prefix``; None if none."""
        by_prefix = {p: o for o, p in (*KEY_PREFIXES.items(), *self._prefixes.items())}
        return by_prefix.get(prefix)

    def labels(self, obj: str) -> tuple[str, str]:
        return _LABELS.get(obj) or self._labels.get(obj, (obj, obj + "s"))

    @property
    def version(self) -> int:
        """Bumped on every schema change (for caches keyed on the schema)."""
        return self._version

    def objects(self) -> list[str]:
        return sorted(self._fields)

    def canonical_object(self, name: str) -> str | None:
        """The object's API name for a case-insensitive ``name``; None if no such object."""
        low = name.lower()
        return next((o for o in self._fields if o.lower() == low), None)

    def fields(self, obj: str) -> list[dict[str, Any]]:
        """A deep copy of the object's field objects, in describe order."""
        with self._lock:
            return copy.deepcopy(self._fields[obj])

    def field_map(self, obj: str) -> dict[str, dict[str, Any]]:
        """Lower-cased field name → field object (shared, read-only by convention)."""
        with self._lock:
            return {f["name"].lower(): f for f in self._fields[obj]}

    def add_field(self, obj: str, field_def: dict[str, Any]) -> None:
        """Add (or replace) a field; ``field_def`` needs at least ``name`` and ``type``."""
        if "label" not in field_def or len(field_def) < 10:
            base = make_field(field_def["name"], field_def["type"], field_def.get("label", field_def["name"]))
            base.update(field_def)
            field_def = base
        with self._lock:
            fields = [f for f in self._fields[obj] if f["name"] != field_def["name"]]
            fields.append(copy.deepcopy(field_def))
            self._fields[obj] = fields
            self._version += 1

    def drop_field(self, obj: str, name: str) -> bool:
        """Remove a field from the schema (its stored values stay, unreachable); False if absent."""
        with self._lock:
            before = len(self._fields[obj])
            self._fields[obj] = [f for f in self._fields[obj] if f["name"] != name]
            self._version += 1
            return len(self._fields[obj]) != before

    def rename_field(self, obj: str, name: str, new_name: str, *, label: str | None = None) -> None:
        """Change a field's API name (and label); KeyError if absent, ValueError if the name is taken."""
        with self._lock:
            names = {f["name"].lower() for f in self._fields[obj]}
            if new_name.lower() in names:
                raise ValueError(f"{obj} already has a field {new_name}")
            for f in self._fields[obj]:
                if f["name"] == name:
                    f["name"] = new_name
                    f["label"] = label or f["label"]
                    f["custom"] = new_name.endswith("__c")
                    self._version += 1
                    return
        raise KeyError(f"{obj}.{name}")

    def retype_field(self, obj: str, name: str, new_type: str, **changes: Any) -> None:
        """Change a field's type (e.g. string → double) keeping its other properties."""
        with self._lock:
            for f in self._fields[obj]:
                if f["name"] == name:
                    f["type"] = new_type
                    f["soapType"] = _SOAP_TYPES.get(new_type, "xsd:string")
                    f.update(changes)
                    self._version += 1
                    return
        raise KeyError(f"{obj}.{name}")

    def describe(self, obj: str, version: str) -> dict[str, Any]:
        """The ``/sobjects/{obj}/describe`` body, shaped like the recorded Contact describe."""
        label, plural = self.labels(obj)
        base = f"/services/data/{version}/sobjects/{obj}"
        prefix = self.key_prefix(obj)
        return {
            "actionOverrides": [],
            "activateable": False,
            "associateEntityType": None,
            "associateParentEntity": None,
            "childRelationships": [],
            "compactLayoutable": True,
            "createable": True,
            "custom": obj.endswith("__c"),
            "customSetting": False,
            "deepCloneable": False,
            "defaultImplementation": None,
            "deletable": True,
            "deprecatedAndHidden": False,
            "extendedBy": None,
            "extendsInterfaces": None,
            "feedEnabled": True,
            "fields": self.fields(obj),
            "hasSubtypes": False,
            "implementedBy": None,
            "implementsInterfaces": None,
            "isInterface": False,
            "isSubtype": False,
            "keyPrefix": prefix,
            "label": label,
            "labelPlural": plural,
            "layoutable": True,
            "listviewable": None,
            "lookupLayoutable": None,
            "mergeable": True,
            "mruEnabled": True,
            "name": obj,
            "namedLayoutInfos": [],
            "networkScopeFieldName": None,
            "queryable": True,
            "recordTypeInfos": [
                {
                    "active": True,
                    "available": True,
                    "defaultRecordTypeMapping": True,
                    "developerName": "Master",
                    "master": True,
                    "name": "Master",
                    "recordTypeId": "012000000000000AAA",
                    "urls": {"layout": f"{base}/describe/layouts/012000000000000AAA"},
                }
            ],
            "replicateable": True,
            "retrieveable": True,
            "searchLayoutable": True,
            "searchable": True,
            "sobjectDescribeOption": "FULL",
            "supportedScopes": [{"label": lab, "name": n} for lab, n in _SCOPES.get(obj, [])],
            "triggerable": True,
            "undeletable": True,
            "updateable": True,
            "urls": self._urls(obj, version, full=True),
        }

    def _urls(self, obj: str, version: str, *, full: bool) -> dict[str, str]:
        base = f"/services/data/{version}/sobjects/{obj}"
        urls = {"rowTemplate": f"{base}/{{ID}}", "describe": f"{base}/describe", "sobject": base}
        if full:
            urls.update(
                {
                    "compactLayouts": f"{base}/describe/compactLayouts",
                    "approvalLayouts": f"{base}/describe/approvalLayouts",
                    "listviews": f"{base}/listviews",
                    "quickActions": f"{base}/quickActions",
                    "layouts": f"{base}/describe/layouts",
                }
            )
        return urls

    def global_describe(self, version: str) -> dict[str, Any]:
        """The ``/sobjects/`` body: encoding, maxBatchSize and one summary per object."""
        out = []
        for obj in self.objects():
            label, plural = self.labels(obj)
            out.append(
                {
                    "activateable": False,
                    "createable": True,
                    "custom": obj.endswith("__c"),
                    "customSetting": False,
                    "deepCloneable": False,
                    "deletable": True,
                    "deprecatedAndHidden": False,
                    "feedEnabled": True,
                    "hasSubtypes": False,
                    "isInterface": False,
                    "isSubtype": False,
                    "keyPrefix": self.key_prefix(obj),
                    "label": label,
                    "labelPlural": plural,
                    "layoutable": True,
                    "mergeable": True,
                    "mruEnabled": True,
                    "name": obj,
                    "queryable": True,
                    "replicateable": True,
                    "retrieveable": True,
                    "searchable": True,
                    "triggerable": True,
                    "undeletable": True,
                    "updateable": True,
                    "urls": self._urls(obj, version, full=False),
                }
            )
        return {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": out}


_NUMBERS = frozenset({"double", "currency", "percent", "int", "long"})
_DATES = frozenset({"date", "datetime", "time"})
# Types whose data a conversion to any other type loses (set to null).
_LOSSY_FROM = _DATES | {"boolean", "multipicklist"}


def convert_value(old_type: str, new_type: str, value: Any) -> Any:
    """A stored value after its field changed from ``old_type`` to ``new_type`` (module docstring)."""
    if value is None or old_type == new_type:
        return value
    if old_type in _LOSSY_FROM or new_type in _DATES or new_type == "boolean":
        return None
    if new_type in _NUMBERS:
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None  # text that is not a number is lost
        if not math.isfinite(number):
            return None
        return int(number) if new_type in ("int", "long") else number
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rewrite(store: RecordStore, obj: str, name: str, new_name: str, convert: Any) -> int:
    """Rewrite field ``name`` of every live record of ``obj`` as ``new_name`` = ``convert(value)``,
    keeping each record's modstamp. Returns the records changed."""
    changed = 0
    for row in list(store.dump(obj, include_deleted=False)):
        if name not in row.data:
            continue
        value = convert(row.data[name])
        changes = {name: None, new_name: value} if new_name != name else {name: value}
        # drop_none: a cleared value is stored absent (also the old name of a renamed field)
        store.update(obj, row.id, changes, modstamp=row.modstamp, drop_none=True)
        changed += 1
    return changed


@schema_control("salesforce")
def change_schema(sandbox: Any, obj: str, change: SchemaChange) -> dict[str, Any]:
    """Apply ``change`` to the org's ``obj`` as Setup would (module docstring); returns what changed."""
    schema: Schema = sandbox.schema
    canonical = schema.canonical_object(obj)
    if canonical is None:
        raise KeyError(f"no sObject {obj}")
    field = schema.field_map(canonical).get(change.field.lower())
    if change.change == "add":
        if field is not None:
            raise ValueError(f"{canonical} already has a field {change.field}")
        label = change.label or change.field
        schema.add_field(canonical, {"name": change.field, "type": change.type or "string", "label": label})
        return {"added": change.field}
    if field is None:
        raise KeyError(f"{canonical}.{change.field}")
    name = str(field["name"])
    if change.change == "drop":
        schema.drop_field(canonical, name)
        return {"dropped": name}
    if change.change == "rename":
        if not change.to:
            raise ValueError("a rename needs 'to'")
        schema.rename_field(canonical, name, change.to, label=change.label)
        moved = _rewrite(sandbox.store, canonical, name, change.to, lambda v: v)
        return {"renamed": name, "to": change.to, "records": moved}
    if not change.type:
        raise ValueError("a retype needs 'type'")
    old = str(field["type"])
    schema.retype_field(canonical, name, change.type)
    new = change.type
    converted = _rewrite(sandbox.store, canonical, name, name, lambda v: convert_value(old, new, v))
    return {"retyped": name, "from": old, "to": change.type, "records": converted}
