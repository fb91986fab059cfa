"""What the push writes under each :class:`~schemas.sync.SyncWriteMode`, at the vendors' batch minimum.

The sync's id map (source key hash → destination id, written by every accepted push) tells which
records this sync already wrote, so no mode reads the destination per record:

- ``upsert``, ``mirror``, ``archive``: one upsert by the destination id property — HubSpot
  ``POST /crm/v3/objects/{type}/batch/upsert`` with ``idProperty``, 100 inputs a call
  (https://developers.hubspot.com/docs/api-reference/latest/crm/objects/custom-objects/batch/upsert-custom-objects),
  Salesforce ``PATCH /composite/sobjects/{obj}/{externalIdField}``, 200 a call
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm).
- ``update-only``: records the id map knows are updated by their destination id — HubSpot
  ``batch/update`` by ``id`` ("by internal ID, or unique property values":
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/objects/batch/update-objects),
  Salesforce ``PATCH /composite/sobjects`` with each record's ``Id`` ("each object must contain an id
  field": https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html);
  neither can create. A record the id map does not know is skipped (``NOT_AT_DESTINATION``) without
  a call: Salesforce has no update-by-external-id that refuses to create (its external-id PATCH is the
  upsert), so the id map is the one source of "exists" both vendors share. A destination record that
  vanished meanwhile (the vendor answers not-found) is skipped too and its mapping forgotten.
- ``create-only``: records the id map does not know are created — HubSpot ``batch/create``,
  Salesforce ``POST /composite/sobjects`` (the writers' docstrings cite them); known ones are skipped
  (``EXISTS_AT_DESTINATION``) without a call, and so is a record the vendor refuses as a duplicate of
  one this sync did not write (HubSpot 409 ``CONFLICT``, Salesforce ``DUPLICATE_VALUE`` on a unique
  external id field).

Skipped records are counted per reason in the ``push`` lineage event (not dead letters: the mode
refused them, the destination did not). Source deletes reach the destination only in ``mirror`` and
``archive`` (what archive means per vendor: :func:`schemas.sync.write_mode_refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.connector import Record, StreamSpec, WriteMode
from schemas.sync import SyncWriteMode
from store.syncs import SyncSpec

__all__ = [
    "EXISTS_AT_DESTINATION",
    "NOT_AT_DESTINATION",
    "WriteGroup",
    "WritePlan",
    "plan_writes",
    "refused_as_skip",
]

NOT_AT_DESTINATION = "NOT_AT_DESTINATION"
"""Skip reason: update-only of a record this sync never wrote (or that vanished at the destination)."""
EXISTS_AT_DESTINATION = "EXISTS_AT_DESTINATION"
"""Skip reason: create-only of a record that exists at the destination."""

# Vendor codes that mean "no such record" to an update by id, and "taken" to a create.
_GONE_CODES = frozenset({"OBJECT_NOT_FOUND", "ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})
_TAKEN_CODES = frozenset({"CONFLICT", "DUPLICATE_VALUE", "DUPLICATE_EXTERNAL_ID"})


@dataclass(frozen=True, slots=True)
class WriteGroup:
    """Records written with one connector mode and id property; ``indexes`` into the planned list."""

    mode: WriteMode
    external_id: str
    indexes: list[int] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WritePlan:
    groups: list[WriteGroup]
    skipped: dict[int, str]  # index → reason, decided without a vendor call


def plan_writes(
    spec: SyncSpec, stream: StreamSpec, keys: list[str], records: list[Record], known: dict[str, str]
) -> WritePlan:
    """Group mapped ``records`` (their source key hashes ``keys``) by how the mode writes them;
    ``known`` is the id map of those keys (looked up for update-only and create-only only)."""
    mode = spec.write_mode
    if mode is SyncWriteMode.UPDATE_ONLY:
        group = WriteGroup(WriteMode.UPDATE, stream.primary_key)
        skipped: dict[int, str] = {}
        for i, (key, rec) in enumerate(zip(keys, records, strict=True)):
            if key in known:
                group.indexes.append(i)
                group.records.append({**rec, stream.primary_key: known[key]})
            else:
                skipped[i] = NOT_AT_DESTINATION
        return WritePlan([group], skipped)
    if mode is SyncWriteMode.CREATE_ONLY:
        group = WriteGroup(WriteMode.CREATE, spec.destination_id_property)
        skipped = {}
        for i, (key, rec) in enumerate(zip(keys, records, strict=True)):
            if key in known:
                skipped[i] = EXISTS_AT_DESTINATION
            else:
                group.indexes.append(i)
                group.records.append(rec)
        return WritePlan([group], skipped)
    everything = WriteGroup(
        WriteMode.UPSERT, spec.destination_id_property, list(range(len(records))), records
    )
    return WritePlan([everything], {})


def refused_as_skip(mode: SyncWriteMode, code: str | None) -> str | None:
    """The skip reason when the vendor refused a record for what the mode forbids, else None (a
    real refusal: dead-lettered)."""
    if mode is SyncWriteMode.UPDATE_ONLY and code in _GONE_CODES:
        return NOT_AT_DESTINATION
    if mode is SyncWriteMode.CREATE_ONLY and code in _TAKEN_CODES:
        return EXISTS_AT_DESTINATION
    return None
