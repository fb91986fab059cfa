"""Writes through sObject Collections: one outcome per input record, in input order.

Upsert = ``PATCH /composite/sobjects/{obj}/{externalIdField}``, create = ``POST /composite/sobjects``,
update = ``PATCH /composite/sobjects``; 200 records per request (the documented maximum), always
``allOrNone=false`` so one bad record fails alone
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm).
Delete = ``DELETE /composite/sobjects?ids=…&allOrNone=false``, 200 ids per request, one DeleteResult
per id in order
(https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-delete.html);
an id already in the recycle bin (``ENTITY_IS_DELETED``: a retried delete) counts as deleted.

Records are checked and serialized locally first: a record without its external id
(``MISSING_EXTERNAL_ID``) or ``Id`` (``MISSING_ID``), or with a value JSON cannot carry (NaN,
infinity, a lone surrogate, an unknown type: ``INVALID_VALUE``) fails alone without a request.
Outcome messages name the vendor ``statusCode`` and field names only — never values.

If a request fails as a whole with a retryable or auth error, the error propagates and the caller
retries the batch: upserts are idempotent, so records of chunks already sent are not duplicated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from connectors.salesforce.client import SalesforceClient
from connectors.values import for_salesforce
from schemas.connector import OutcomeStatus, Record, RecordOutcome, WriteMode, WriteResult
from schemas.errors import DataError

__all__ = ["CHUNK", "RETRYABLE_CODES", "write_records"]

CHUNK = 200
# Per-record codes where the same record can succeed on a later try.
RETRYABLE_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "REQUEST_RUNNING_TOO_LONG",
        "SERVER_UNAVAILABLE",
        "UNKNOWN_EXCEPTION",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUEST_LIMIT_EXCEEDED",
    }
)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,120}$")


class _BadValue(Exception):
    def __init__(self, field: str) -> None:
        self.field = field


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TypeError("naive datetime")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not finite")
        return float(value)
    raise TypeError(type(value).__name__)


def _encode_value(name: str, value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadValue(name)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_default)
        text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        raise _BadValue(name) from None
    return text


def _encode_record(sobject: str, record: Record) -> bytes:
    """The record as the JSON object Collections expects (``attributes.type`` first)."""
    parts = ['"attributes":{"type":' + json.dumps(sobject) + "}"]
    for name, value in record.items():
        if name == "attributes":
            continue
        if not isinstance(name, str):
            raise _BadValue("?")
        parts.append(_encode_value(name, name) + ":" + _encode_value(name, value))
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def _failed(index: int, ext: str | None, code: str, message: str, **kw: Any) -> RecordOutcome:
    return RecordOutcome(index, ext, OutcomeStatus.FAILED, error_code=code, error_message=message, **kw)


def _vendor_outcome(index: int, ext: str | None, res: dict[str, Any], mode: WriteMode) -> RecordOutcome:
    rid = res.get("id") if isinstance(res.get("id"), str) else None
    if res.get("success") is True:
        if mode is WriteMode.CREATE or (mode is WriteMode.UPSERT and res.get("created") is True):
            return RecordOutcome(index, ext, OutcomeStatus.CREATED, id=rid)
        return RecordOutcome(index, ext, OutcomeStatus.UPDATED, id=rid)
    errors = res.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("statusCode") or first.get("errorCode")
    code = code if isinstance(code, str) and _NAME_RE.match(code) else "UNKNOWN_ERROR"
    fields = [f for f in first.get("fields") or [] if isinstance(f, str) and _NAME_RE.match(f)]
    message = f"Salesforce rejected the record: {code}" + (
        f" (fields: {', '.join(fields)})" if fields else ""
    )
    return _failed(index, ext, code, message, id=rid, retryable=code in RETRYABLE_CODES)


def _ext_value(record: Record, external_id: str) -> str | None:
    value = record.get(external_id)
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


def write_records(
    client: SalesforceClient,
    sobject: str,
    records: Sequence[Record],
    mode: WriteMode,
    external_id: str,
    *,
    field_types: Mapping[str, str] | None = None,
) -> WriteResult:
    """Write ``records``; see the module docstring for the promises. ``field_types`` (field → the
    describe's type) converts date/time values to what each field takes (:mod:`connectors.values`:
    a HubSpot epoch-ms string becomes a DateTime ``…T…Z`` or a Date ``YYYY-MM-DD``)."""
    calls = client.calls
    outcomes: list[RecordOutcome | None] = [None] * len(records)
    pending: list[tuple[int, str | None, bytes]] = []
    for i, record in enumerate(records):
        ext = _ext_value(record, external_id) if isinstance(record, dict) else None
        if not isinstance(record, dict):
            outcomes[i] = _failed(i, None, "INVALID_RECORD", "record is not a field → value mapping")
            continue
        if mode is WriteMode.UPSERT and ext is None:
            outcomes[i] = _failed(i, None, "MISSING_EXTERNAL_ID", f"record has no {external_id} value")
            continue
        if mode in (WriteMode.UPDATE, WriteMode.DELETE) and not isinstance(record.get("Id"), str):
            outcomes[i] = _failed(i, ext, "MISSING_ID", "record has no Id")
            continue
        if field_types:
            record = {k: for_salesforce(v, field_types.get(k)) for k, v in record.items()}
        try:
            body = _encode_record(sobject, record)
        except _BadValue as bad:
            field = bad.field if _NAME_RE.match(bad.field) else "?"
            outcomes[i] = _failed(i, ext, "INVALID_VALUE", f"value of {field} cannot be sent as JSON")
            continue
        pending.append((i, ext, body))
    if mode is WriteMode.DELETE:
        _delete(client, sobject, records, pending, outcomes)
    else:
        for start in range(0, len(pending), CHUNK):
            _send_chunk(client, sobject, pending[start : start + CHUNK], mode, external_id, outcomes)
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(records)
    return WriteResult(done, calls=client.calls - calls)


def _send_chunk(
    client: SalesforceClient,
    sobject: str,
    chunk: list[tuple[int, str | None, bytes]],
    mode: WriteMode,
    external_id: str,
    outcomes: list[RecordOutcome | None],
) -> None:
    if mode is WriteMode.UPSERT:
        method, path = "PATCH", f"composite/sobjects/{sobject}/{external_id}"
    elif mode is WriteMode.CREATE:
        method, path = "POST", "composite/sobjects"
    else:
        method, path = "PATCH", "composite/sobjects"
    body = b'{"allOrNone":false,"records":[' + b",".join(b for _, _, b in chunk) + b"]}"
    try:
        results = client.write_collection(
            method, path, body, count=len(chunk), what=f"{mode.value} {sobject}"
        )
    except DataError as err:
        # The request as a whole was refused (e.g. a body Salesforce cannot parse): every record in
        # it failed with that code; other chunks are unaffected.
        code = err.code or "REQUEST_REJECTED"
        for i, ext, _ in chunk:
            outcomes[i] = _failed(i, ext, code, f"Salesforce rejected the request: {code}")
        return
    for (i, ext, _), res in zip(chunk, results, strict=True):
        outcomes[i] = _vendor_outcome(i, ext, res, mode)


def _delete(
    client: SalesforceClient,
    sobject: str,
    records: Sequence[Record],
    pending: list[tuple[int, str | None, bytes]],
    outcomes: list[RecordOutcome | None],
) -> None:
    chunk: list[tuple[int, str | None, str]] = []
    for i, ext, _ in pending:
        rid = str(records[i]["Id"])
        if not re.match(r"^[A-Za-z0-9]{15,18}$", rid):
            outcomes[i] = _failed(i, ext, "MALFORMED_ID", "Id is not a Salesforce id")
            continue
        chunk.append((i, ext, rid))
    for start in range(0, len(chunk), CHUNK):
        _delete_chunk(client, sobject, chunk[start : start + CHUNK], outcomes)


def _delete_chunk(
    client: SalesforceClient,
    sobject: str,
    chunk: list[tuple[int, str | None, str]],
    outcomes: list[RecordOutcome | None],
) -> None:
    try:
        results = client.delete_collection([rid for _, _, rid in chunk], what=f"delete {sobject}")
    except DataError as err:
        code = err.code or "REQUEST_REJECTED"
        for i, ext, rid in chunk:
            outcomes[i] = _failed(i, ext, code, f"Salesforce rejected the request: {code}", id=rid)
        return
    for (i, ext, rid), res in zip(chunk, results, strict=True):
        outcome = _vendor_outcome(i, ext, res, WriteMode.DELETE)
        if outcome.ok or outcome.error_code == "ENTITY_IS_DELETED":  # already in the bin: done
            outcomes[i] = RecordOutcome(i, ext, OutcomeStatus.DELETED, id=rid)
        else:
            outcomes[i] = dataclasses.replace(outcome, id=rid)
