"""Reads of given records by id: ``POST /crm/v3/objects/{type}/batch/read``, 100 ids a call.

HubSpot's batch endpoints take up to 100 inputs (its CRM guides describe batches "of up to 100
records", https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/guide — not stated for
batch/read on its own page: a guess carried over, see /work/shared/vendor-fixtures DOC_NOTES). The
body names the ``properties`` wanted and an empty ``propertiesWithHistory`` (both required by the
spec's BatchReadInputSimplePublicObjectId; with history the limit is 50). Ids HubSpot does not have
(archived, merged away, never there) come back as a 207 whose OBJECT_NOT_FOUND error lists them in
``context.ids`` (batch_read_by_email_207_object_not_found.captured.json); the records found are in
``results`` of the same answer. Records have the shape of ``read_page``'s: properties plus ``id``.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.hubspot.client import HubSpotClient
from schemas.connector import Record
from schemas.errors import ConfigError, TransientError

__all__ = ["BATCH_READ_LIMIT", "read_by_ids"]

BATCH_READ_LIMIT = 100


def read_by_ids(
    client: HubSpotClient, object_type: str, ids: Sequence[str], properties: Sequence[str]
) -> tuple[list[Record], list[str]]:
    """The live records with these ids and the ids HubSpot did not return: ceil(n / 100) calls."""
    unique = list(dict.fromkeys(str(i) for i in ids))
    if any(not i.isdigit() for i in unique):
        raise ConfigError("read_by_ids: a HubSpot record id is a number")
    records: list[Record] = []
    for start in range(0, len(unique), BATCH_READ_LIMIT):
        chunk = unique[start : start + BATCH_READ_LIMIT]
        _, body = client.batch(
            object_type, "read", [{"id": i} for i in chunk], properties=list(properties),
            propertiesWithHistory=[],
        )  # fmt: skip
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise TransientError("HubSpot batch read: the answer has no results list")
        for raw in results:
            if isinstance(raw, dict) and raw.get("id") is not None:
                rec: Record = dict(raw.get("properties") or {})
                rec["id"] = str(raw["id"])
                records.append(rec)
    found = {r["id"] for r in records}
    return records, [i for i in unique if i not in found]
