"""Salesforce custom objects (``Project__c``) in the sandbox org.

A real org defines custom objects in Setup or through the Metadata API (``CustomObject``); the REST
API then serves them like standard objects: the global describe (``GET /sobjects/``) lists them with
``custom: true``, ``/sobjects/Project__c/describe`` describes them, SOQL, sObject Collections and
upsert by external id work on them
(https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_custom_objects.htm,
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_describeGlobal.htm).
The sandbox does not emulate the Metadata API: :func:`custom_object_fields` builds the fields the
Python handle (``SalesforceSandbox.add_custom_object``) installs.

Every custom object has the standard fields ``Id``, ``IsDeleted``, ``Name`` (the record name, text
up to 80 characters, required), ``OwnerId``, ``CreatedDate``, ``CreatedById``, ``LastModifiedDate``,
``LastModifiedById`` and ``SystemModstamp`` (the "Custom Object" standard fields in
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/system_fields.htm);
its own fields end in ``__c``. Key prefixes of custom objects start with ``a`` and are assigned by
the org (guess: the sandbox hands out ``a01``, ``a02``… in creation order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.salesforce.describe import make_field, system_fields

__all__ = ["CUSTOM_NAME", "custom_key_prefix", "custom_object_fields"]

# API names of custom objects/fields: a letter, then letters, digits and single underscores, "__c".
CUSTOM_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*__c$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def custom_key_prefix(index: int) -> str:
    """The key prefix of the org's ``index``-th custom object (1-based): ``a01``, ``a02``, …"""
    if not 1 <= index < 62 * 62:
        raise ValueError("too many custom objects")
    return "a" + _BASE62[index // 62] + _BASE62[index % 62]


def custom_object_fields(label: str, fields: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The describe field objects of a custom object: the standard fields and ``fields`` (each
    ``make_field`` keywords plus ``name``, ``type`` and ``label``; names must end in ``__c``)."""
    head, tail = system_fields(label)
    own = []
    for spec in fields:
        kw = dict(spec)
        name, type_, flabel = str(kw.pop("name")), str(kw.pop("type")), str(kw.pop("label"))
        if not CUSTOM_NAME.match(name):
            raise ValueError(f"custom field {name!r}: a custom field's API name ends in __c")
        own.append(make_field(name, type_, flabel, **kw))
    record_name = make_field("Name", "string", f"{label} Name", length=80, nillable=False, name_field=True)
    return [*head, record_name, *own, *tail]
