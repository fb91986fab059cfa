"""Record merges and GDPR deletes: the two ways a HubSpot record leaves without an archive entry.

Merge (``POST /crm/v3/objects/{t}/merge``, body ``{"primaryObjectId", "objectIdToMerge"}``, answer
200 with the resulting SimplePublicObject: spec contacts_v3_operations.hubspot_spec.json;
https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/basic/post-crm-v3-objects-contacts-merge).
Since HubSpot's "Updated merge functionality for contacts and companies"
(https://developers.hubspot.com/changelog/updated-merge-functionality-for-contacts-and-companies) a
merge creates a **new record with a new id**; both old ids point to it ("fetching any records using
the original IDs will return the new merged record with the new ID"); the primary's values win, the
other record's fill the gaps. Emulated here:

* both old records leave the live list, search and the archived list (the issue's report: "the
  losing record is not archived"; a third-party blog claims both are archived — conflicting, noted
  in docs/VENDOR-FAITHFULNESS.md);
* the new record's ``hs_merged_object_ids`` lists every id merged into it, ";"-separated, the ids
  its parents had merged included (that it lists the old primary's id too is our guess);
* it is created and modified at the merge (its ``lastmodifieddate`` is the merge time: a guess, but
  a new record cannot carry an older one), so incremental reads see it;
* ``GET /crm/v3/objects/{t}/{oldId}`` answers the new record (with its new id);
* ``legacy_merge_ids=True`` emulates the behaviour before that change: the primary keeps its id.

GDPR delete (``POST /crm/v3/objects/contacts/gdpr-delete``, body ``{"objectId", "idProperty"?}``,
answer 204; https://developers.hubspot.com/changelog/changes-to-the-gdpr-deletion-endpoints-for-the-crm-contact-object-api):
the record is removed permanently — not in the live list, not in the archived list, ``GET`` 404 —
and nothing in the API reports it (https://knowledge.hubspot.com/privacy-and-consent/understand-restorable-and-permanent-contact-deletions).
An e-mail that matches no contact is blocklisted (recorded in :attr:`Merges.blocklist`; not enforced).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.hubspot.errors import ApiError
from sandbox.hubspot.objects import CrmObjects
from sandbox.hubspot.schema import ObjectType
from sandbox.records import RecordRow, RecordStore

__all__ = ["MERGED_IDS", "Merges"]

MERGED_IDS = "hs_merged_object_ids"


def _merged(row: RecordRow) -> list[str]:
    return [i for i in str(row.data.get(MERGED_IDS) or "").split(";") if i]


class Merges:
    """Merges and GDPR deletes over one portal's records (callers hold ``objects.write_lock``)."""

    def __init__(self, store: RecordStore, objects: CrmObjects) -> None:
        self.store = store
        self.objects = objects
        self.legacy_merge_ids = False
        self.blocklist: set[str] = set()

    def merge(self, ot: ObjectType, primary_id: str, other_id: str, now_ms: int) -> RecordRow:
        """Merge ``other_id`` into ``primary_id``; the resulting record (new id unless legacy)."""
        if primary_id == other_id:
            raise ApiError(400, "VALIDATION_ERROR", "Cannot merge an object with itself")
        primary = self.store.get(ot.name, primary_id)
        other = self.store.get(ot.name, other_id)
        if primary is None or other is None:  # text is ours; HubSpot's is not on record
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Could not find {ot.singular} to merge")
        ids = sorted({*_merged(primary), *_merged(other), primary.id, other.id}, key=int)
        data: dict[str, Any] = {**other.data, **primary.data}
        if self.legacy_merge_ids:
            ids.remove(primary.id)
            data[MERGED_IDS] = ";".join(ids)
            self.store.purge(ot.name, other.id)
            return self.objects.patch(ot, primary, data, now_ms)
        data[MERGED_IDS] = ";".join(ids)
        self.store.purge(ot.name, primary.id)
        self.store.purge(ot.name, other.id)
        num = self.store.next_num(ot.name)
        return self.store.insert(ot.name, str(num), data, num=num, modstamp=now_ms, created=primary.created)

    def resolve(self, ot: ObjectType, record_id: str) -> RecordRow | None:
        """The live record an id was merged into, if any (old ids keep pointing at the result)."""
        rows = self.store.select(
            ot.name,
            f"deleted = 0 AND (';' || json_extract(data, '$.{MERGED_IDS}') || ';') LIKE ?",
            (f"%;{record_id};%",),
            order_by="num",
            limit=1,
        )
        return rows[0] if rows else None

    def gdpr_delete(self, ot: ObjectType, body: Mapping[str, Any]) -> None:
        """Remove a contact for good (live or archived); an unknown e-mail is blocklisted."""
        key = str(body.get("objectId") or "").strip()
        if not key:
            raise ApiError(400, "VALIDATION_ERROR", "objectId is required")
        by_email = body.get("idProperty") == "email"
        rows = (
            self.store.find(ot.name, "email", key.lower(), include_deleted=True)
            if by_email
            else [r for r in [self.store.get(ot.name, key, include_deleted=True)] if r is not None]
        )
        if not rows:
            if by_email:
                self.blocklist.add(key.lower())
                return
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Could not find {ot.singular} {key}")
        for row in rows:
            self.store.purge(ot.name, row.id)
