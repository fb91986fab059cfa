"""CRM v3 object records: rendering, property validation, lookups and writes over the RecordStore.

Storage: one store row per record; ``id``/``num`` is HubSpot's numeric record id, ``created`` and
``modstamp`` hold ``createdate`` and the last-modified date (``lastmodifieddate`` for contacts,
``hs_lastmodifieddate`` otherwise) in epoch ms, ``deleted`` is HubSpot's *archived* flag, and
``data`` holds every other property as HubSpot stores it: a string (``null`` once cleared).
System properties (``createdate``, last-modified, ``hs_object_id``) are rendered from the columns,
so they can never disagree with ``createdAt``/``updatedAt``/``id``.

Rendering follows the spec's SimplePublicObject (``object_simple_public_object.example.hubspot_spec.json``):
every property value is a string or null, plus ``createdAt``, ``updatedAt``, ``archived`` and, for
archived records, ``archivedAt``.
"""

from __future__ import annotations

import calendar
import datetime
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox.hubspot.errors import ApiError, PropertyProblem, invalid_properties
from sandbox.hubspot.schema import ObjectType, PropertyDef, PropertyRegistry, iso_ms
from sandbox.records import RecordRow, RecordStore

__all__ = ["MAX_VALUE_CHARS", "CrmObjects", "canonical_number", "not_midnight_message", "parse_datetime_ms"]

# HubSpot's own e-mail check is stricter than RFC 5322 in places; this catches what its
# INVALID_EMAIL examples show ("name@domain.<bad tld>", "example.lcom", "dsfsafas@").
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_SYSTEM = ("hs_object_id",)
# A property value holds at most 65,536 characters (HubSpot's property-field limits:
# https://knowledge.hubspot.com/properties/property-field-types-in-hubspot, "Single-line text").
MAX_VALUE_CHARS = 65_536
# A ``date`` property holds midnight UTC only: any other time of day is refused with INVALID_DATE
# (https://developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis:
# "If you try to set a value that is not midnight UTC, you will receive an error").
_DAY_MS = 86_400_000


def parse_datetime_ms(value: Any) -> int | None:
    """Epoch milliseconds from an epoch-ms number/string or an ISO-8601 date(-time); None if neither.

    HubSpot accepts both forms in writes and in search filters on date properties
    (https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm, "Filter search results").
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d{1,15}", text):
        return int(text)
    m = _ISO.match(text)
    if not m:
        return None
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), 0, 0, 0))
        time.gmtime(secs)  # range check
    except (ValueError, OverflowError):
        return None
    try:  # timegm rolls 2024-02-30 over to March 1st; HubSpot has no such day
        datetime.date(int(y), int(mo), int(d))
    except ValueError:
        return None
    ms = secs * 1000 + (int((frac or "0").ljust(3, "0")[:3]))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * 1000
    return ms


def not_midnight_message(ms: int) -> str:
    """HubSpot's refusal of a ``date`` value that is not midnight UTC, in its live form: the value as
    epoch ms, then H:M:S.ms without padding ("1606768561954 is at 20:36:1.954 UTC, not midnight!",
    quoted in hubspot-net/HubSpot.NET#98; "1641038400000 is at 12:0:0.0 UTC, not midnight!" in public
    notes). Unpadded milliseconds below 100 (".50" vs ".050") are our guess.
    """
    rest = ms % _DAY_MS
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    sec, frac = divmod(rest, 1000)
    return f"{ms} is at {h}:{m}:{sec}.{frac} UTC, not midnight!"


def canonical_number(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return str(int(f)) if f.is_integer() and abs(f) < 1e18 else repr(f)


class CrmObjects:
    """Record operations for one portal, shared by the HTTP handlers and the Python handle."""

    def __init__(self, store: RecordStore, registry: PropertyRegistry, portal_id: int) -> None:
        self.store = store
        self.registry = registry
        self.portal_id = portal_id
        # Batch writes validate everything, then write: one lock keeps that atomic against the
        # test thread's own writes through the Python handle.
        self.write_lock = threading.RLock()

    # -- properties ----------------------------------------------------------------------------

    def output_properties(self, ot: ObjectType, requested: Sequence[str] | None) -> list[str]:
        """Which properties a response carries.

        No ``properties`` → the object's documented defaults. Named ones → those that exist (unknown
        names are ignored, as the ``properties`` parameter's description in the contacts spec says)
        plus ``createdate``, ``hs_object_id`` and the last-modified property, which HubSpot always adds
        (batch_read_by_email_207_object_not_found.captured.json: ``properties: [email]`` came back with
        createdate, email, hs_object_id, lastmodifieddate). Sorted by name, as HubSpot returns them.
        """
        live = self.registry.live(ot.name)
        if not requested:
            names = [n for n in ot.default_properties if n in live]
        else:
            names = [n for n in dict.fromkeys(requested) if n in live]
            names += [n for n in (*_SYSTEM, ot.created_property, ot.modified_property) if n not in names]
        return sorted(names)

    def value(self, ot: ObjectType, row: RecordRow, name: str) -> str | None:
        if name == "hs_object_id":
            return row.id
        if name == ot.created_property:
            return iso_ms(row.created)
        if name == ot.modified_property:
            return iso_ms(row.modstamp)
        v = row.data.get(name)
        return None if v is None else str(v)

    def render(self, ot: ObjectType, row: RecordRow, names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": row.id,
            "properties": {n: self.value(ot, row, n) for n in names},
            "createdAt": iso_ms(row.created),
            "updatedAt": iso_ms(row.modstamp),
            "archived": row.deleted,
        }
        if row.deleted:
            out["archivedAt"] = iso_ms(row.modstamp)
        return out

    def normalize(
        self, ot: ObjectType, props: Mapping[str, Any], *, enforce_read_only: bool = True
    ) -> tuple[dict[str, str | None], list[PropertyProblem]]:
        """Validate written values against the property definitions; returns (values, problems).

        Values become HubSpot's string forms; ``None``/``""`` clear a property. Problem codes are
        the ones HubSpot reports inside "Property values were not valid": PROPERTY_DOESNT_EXIST,
        INVALID_EMAIL, INVALID_OPTION (seen live), READ_ONLY_VALUE, INVALID_NUMBER, INVALID_BOOLEAN,
        INVALID_DATE (same envelope; codes not verified against a live body).
        """
        live = self.registry.live(ot.name)
        out: dict[str, str | None] = {}
        problems: list[PropertyProblem] = []
        for name, raw in props.items():
            pdef = live.get(name)
            if pdef is None:
                msg = f'Property "{name}" does not exist'
                problems.append(PropertyProblem.make(name, "PROPERTY_DOESNT_EXIST", msg, self.portal_id))
                continue
            if enforce_read_only and pdef.read_only_value:
                msg = f'"{name}" is a read only property; its value cannot be set.'
                problems.append(PropertyProblem.make(name, "READ_ONLY_VALUE", msg))
                continue
            if raw is None or raw == "":
                out[name] = None
                continue
            value, problem = self._coerce(pdef, raw)
            if problem is not None:
                problems.append(problem)
            else:
                out[name] = value
        return out, problems

    @staticmethod
    def _coerce(pdef: PropertyDef, raw: Any) -> tuple[str | None, PropertyProblem | None]:
        name = pdef.name
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if name == "email":
            text = text.strip().lower()
            if not _EMAIL.match(text):
                return None, PropertyProblem.make(name, "INVALID_EMAIL", f"Email address {raw} is invalid")
            return text, None
        if pdef.type == "number":
            num = canonical_number(raw)
            if num is None:
                return None, PropertyProblem.make(name, "INVALID_NUMBER", f"{raw} was not a valid number.")
            return num, None
        if pdef.type == "bool":
            if text.lower() not in ("true", "false"):
                return None, PropertyProblem.make(name, "INVALID_BOOLEAN", f"{raw} was not a valid boolean.")
            return text.lower(), None
        if pdef.type in ("datetime", "date"):
            ms = parse_datetime_ms(raw)
            if ms is None:
                return None, PropertyProblem.make(name, "INVALID_DATE", f"{raw} was not a valid date.")
            if pdef.type == "date" and ms % _DAY_MS:
                return None, PropertyProblem.make(name, "INVALID_DATE", not_midnight_message(ms))
            return (iso_ms(ms) if pdef.type == "datetime" else iso_ms(ms)[:10]), None
        if len(text) > MAX_VALUE_CHARS:
            # The documented limit; code and text are the emulator's (not verified against a live
            # body) and, unlike INVALID_EMAIL's, do not quote the value.
            msg = f"{name} value is {len(text)} characters long; the limit is {MAX_VALUE_CHARS}."
            return None, PropertyProblem.make(name, "INVALID_LONG_STRING", msg)
        if pdef.type == "enumeration":
            allowed = pdef.option_values
            chosen = text.split(";") if pdef.field_type == "checkbox" else [text]
            bad = [c for c in chosen if c not in allowed]
            if bad:
                listing = ", ".join(v for _, v in pdef.options)
                msg = f"{bad[0]} was not one of the allowed options: [{listing}]"
                return None, PropertyProblem.make(name, "INVALID_OPTION", msg)
            return text, None
        return text, None

    # -- lookups -------------------------------------------------------------------------------

    def id_property(self, ot: ObjectType, name: str | None) -> str | None:
        """Validate an ``idProperty``: None/hs_object_id → record ids; else it must be unique.

        A non-unique one is refused with HubSpot's text "Unable to perform update/upsert by non-unique
        0-1 property" (quoted in https://github.com/HubSpot/hubspot-api-nodejs/issues/548). Contacts'
        ``email`` counts as unique (https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/guide).
        """
        if not name or name == "hs_object_id":
            return None
        if not isinstance(name, str):  # a JSON body may carry any value here
            raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: idProperty must be a string")
        pdef = self.registry.get(ot.name, name)
        unique = pdef is not None and (pdef.has_unique_value or (ot.name == "contacts" and name == "email"))
        if not unique:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Unable to perform update/upsert by non-unique {ot.type_id} property",
            )
        return name

    def find(
        self, ot: ObjectType, key: str, id_prop: str | None, *, archived: bool = False
    ) -> RecordRow | None:
        """The record whose id (or ``id_prop`` value) is ``key``, live or (``archived``) archived only."""
        if id_prop is None:
            if not key.isdigit():
                return None
            row = self.store.get(ot.name, key, include_deleted=True)
            return row if row is not None and row.deleted == archived else None
        value = key.strip().lower() if id_prop == "email" else key
        rows = [
            r for r in self.store.find(ot.name, id_prop, value, include_deleted=True) if r.deleted == archived
        ]
        return rows[0] if rows else None

    def conflicts(
        self, ot: ObjectType, values: Mapping[str, str | None], own_id: str | None
    ) -> ApiError | None:
        """A 409 CONFLICT if a unique value (contacts' email, hasUniqueValue properties) is taken.

        The contacts text "Contact already exists. Existing ID: <id>" is HubSpot's
        (https://github.com/HubSpot/hubspot-api-python/issues/51); other objects reuse its form.
        """
        unique = set(self.registry.unique_properties(ot.name))
        if ot.name == "contacts":
            unique.add("email")
        for name in sorted(unique):
            v = values.get(name)
            if v is None:
                continue
            for r in self.store.find(ot.name, name, v):
                if r.id != own_id:
                    return ApiError(
                        409, "CONFLICT", f"{ot.singular.capitalize()} already exists. Existing ID: {r.id}"
                    )
        return None

    # -- writes --------------------------------------------------------------------------------

    def insert(self, ot: ObjectType, values: Mapping[str, str | None], now_ms: int) -> RecordRow:
        num = self.store.next_num(ot.name)
        data = {k: v for k, v in values.items() if v is not None}
        return self.store.insert(ot.name, str(num), data, num=num, modstamp=now_ms, created=now_ms)

    def patch(
        self, ot: ObjectType, row: RecordRow, values: Mapping[str, str | None], now_ms: int
    ) -> RecordRow:
        # A cleared property is absent, as after insert(): a create and an update with the same
        # values leave the same record.
        updated = self.store.update(ot.name, row.id, dict(values), modstamp=now_ms, drop_none=True)
        return updated if updated is not None else row

    def create_checked(self, ot: ObjectType, props: Mapping[str, Any], now_ms: int) -> RecordRow:
        """Validate and create one record (400 for bad values, 409 for a taken unique value)."""
        values, problems = self.normalize(ot, props)
        if problems:
            raise invalid_properties(problems)
        with self.write_lock:
            if (conflict := self.conflicts(ot, values, None)) is not None:
                raise conflict
            return self.insert(ot, values, now_ms)

    def update_checked(
        self, ot: ObjectType, row: RecordRow, props: Mapping[str, Any], now_ms: int
    ) -> RecordRow:
        values, problems = self.normalize(ot, props)
        if problems:
            raise invalid_properties(problems)
        with self.write_lock:
            if (conflict := self.conflicts(ot, values, row.id)) is not None:
                raise conflict
            return self.patch(ot, row, values, now_ms)

    def validate_all(
        self, ot: ObjectType, inputs: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, str | None]]:
        """Normalise every input's properties; any problem fails the whole batch with one 400.

        HubSpot's batch writes are all-or-nothing for invalid values: a batch upsert with one bad
        e-mail fails as a whole with "Property values were not valid: [...]"
        (https://github.com/Atlas-Authority/marketing-automation/issues/174), and a batch create with
        an existing e-mail fails as a whole with 409 naming the first one
        (https://github.com/HubSpot/hubspot-api-python/issues/51).
        """
        out: list[dict[str, str | None]] = []
        problems: list[PropertyProblem] = []
        for item in inputs:
            props = item.get("properties") or {}
            if not isinstance(props, Mapping):
                raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
            values, bad = self.normalize(ot, props)
            problems.extend(bad)
            out.append(values)
        if problems:
            raise invalid_properties(problems)
        return out
