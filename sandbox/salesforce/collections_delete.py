"""``DELETE /composite/sobjects?ids=…&allOrNone=…``: delete up to 200 records of any types in one call.

As documented (https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-delete.html):
a well-formed request answers 200 with one DeleteResult per id, in the order given
(``{"id", "success", "errors"}``); ``allOrNone`` (default false) rolls every delete back when one
fails; more than 200 ids is refused as a whole (400, the platform's ``EXCEEDED_ID_LIMIT`` as for the
other collection calls). Per-record error codes are the platform's usual ones — a **guess** for this
call, no vendor example shows a failed item: ``MALFORMED_ID`` for an id that is not one,
``ENTITY_IS_DELETED`` for a record already in the recycle bin and ``NOT_FOUND`` for an id no
record has (both as this sandbox's single-record DELETE answers).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.salesforce.http import ApiError, json_response
from sandbox.salesforce.ids import is_valid_id, to_18

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["delete"]

LIMIT = 200
_ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": []}


async def delete(sb: SalesforceSandbox, request: Request) -> Response:
    raw = request.query_params.get("ids", "")
    ids = [p.strip() for p in raw.split(",") if p.strip()]
    if not ids:
        raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
    if len(ids) > LIMIT:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )
    all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"

    def run() -> list[dict[str, Any]]:
        with sb.write_lock:
            plan: list[tuple[str, str | None, dict[str, Any] | None]] = []  # (id, object, error)
            for rid in ids:
                if not _ID_SHAPE.match(rid):
                    plan.append((rid, None, _error("MALFORMED_ID", f"malformed id {rid}")))
                    continue
                rid18 = to_18(rid) if is_valid_id(rid) else rid
                obj = sb.schema.object_for_prefix(rid18[:3])
                row = sb.store.get(obj, rid18, include_deleted=True) if obj in sb.schema.objects() else None
                if obj is None or row is None:
                    plan.append((rid18, None, _error("NOT_FOUND", "The requested resource does not exist")))
                elif row.deleted:
                    plan.append((rid18, obj, _error("ENTITY_IS_DELETED", "entity is deleted")))
                else:
                    plan.append((rid18, obj, None))
            failed = any(err is not None for _, _, err in plan)
            if all_or_none and failed:
                rolled = _error(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using "
                    "AllOrNone header",
                )
                return [{"id": rid, "success": False, "errors": [err or rolled]} for rid, _, err in plan]
            out = []
            for rid, obj, err in plan:
                if err is None and obj is not None:
                    sb.store.set_deleted(obj, rid, True)
                out.append({"id": rid, "success": err is None, "errors": [] if err is None else [err]})
            return out

    return json_response(await asyncio.to_thread(run))
