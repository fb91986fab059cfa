"""Bulk API 2.0 query jobs: create, poll, page CSV results by locator, abort, delete.

Walkthrough: https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_walkthrough.htm
Job states (UploadComplete → InProgress → JobComplete, or Aborted/Failed):
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/bulk_api_2_job_states.htm
Results (CSV, ``Sforce-Locator`` / ``Sforce-NumberOfRecords``, locator ``null`` on the last set):
https://developer.salesforce.com/docs/platform/api-asynch/guide/query-get-job-results.md

A job is a compiled query plus the sort keys where each result set starts; CSV is streamed in
2,000-row chunks, so a million-row result is never held in memory. Jobs complete on the second
status poll (the first reports InProgress), which is when ``numberRecordsProcessed`` is counted.
A query without ORDER BY comes back in Id order (what automatic PK chunking by Id ranges gives;
Salesforce promises no order at all).

Refusals and failures emulated (limits: https://developer.salesforce.com/docs/atlas.en-us.228.0.api_bulk_v2.meta/api_bulk_v2/bulk_api_2_limits.htm,
error codes: https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_0_errors.htm):

* always on: more than ``daily_job_limit`` (10,000) query jobs in 24 hours → 400 ``LIMIT_EXCEEDED``
  (the code Airbyte's Salesforce source meets in production and handles as the 24-hour limit,
  airbytehq/airbyte source_salesforce/streams.py; the Bulk errors page calls it ExceededQuota; the
  message text is a **guess**);
* always on: an ORDER BY query over more than ``order_by_timeout_rows`` (default 100,000, a
  **guess**) rows fails (state ``Failed``, ``errorMessage`` naming QUERY_TIMEOUT): "Use of ORDER BY
  in a Bulk 2.0 query disables PKChunking ... potentially results in query timeouts"
  (https://developer.salesforce.com/docs/platform/api-asynch/guide/bulk-api-2-0-troubleshoot-query-timeouts.md);
* switches: objects in ``unsupported_objects`` → 400 ``INVALIDENTITY`` "Entity 'X' is not supported
  by the Bulk API." (Airbyte keys on this text); ``enabled = False`` → 400 ``FeatureNotEnabled``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.salesforce.engine import (
    USER_ID,
    Column,
    Compiled,
    compile_query,
    fetch_page,
    format_datetime,
    format_datetime_bulk,
    iter_rows,
    sort_key,
)
from sandbox.salesforce.http import ApiError, json_response, read_json
from sandbox.salesforce.ids import make_id
from sandbox.salesforce.soql import parse

if TYPE_CHECKING:
    from sandbox.salesforce.app import SalesforceSandbox

__all__ = ["BulkJobs"]

_DELIMITERS = {"COMMA": ",", "TAB": "\t", "SEMICOLON": ";", "PIPE": "|", "CARET": "^", "BACKQUOTE": "`"}
_LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
DEFAULT_MAX_RECORDS = 50_000
DAILY_JOB_LIMIT = 10_000
ORDER_BY_TIMEOUT_ROWS = 100_000
_FLOAT_TYPES = frozenset({"double", "currency", "percent"})


@dataclass
class _Job:
    id: str
    operation: str
    sobject: str
    compiled: Compiled
    version: str
    delimiter: str
    line_ending: str
    created_ms: int
    state: str = "UploadComplete"
    polls: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    ordered: bool = False
    error_message: str | None = None
    starts: dict[int, tuple[Any, ...] | None] = field(default_factory=lambda: {0: None})

    def info(self, *, full: bool) -> dict[str, Any]:
        stamp = format_datetime(self.created_ms)
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.sobject,
            "createdById": USER_ID,
            "createdDate": stamp,
            "systemModstamp": stamp,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version.lstrip("v")),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.delimiter,
        }
        if self.error_message is not None:
            out["errorMessage"] = self.error_message
        if full:
            elapsed = (self.finished or time.monotonic()) - self.started
            out.update(
                {
                    "jobType": "V2Query",
                    "numberRecordsProcessed": self.total,
                    "retries": 0,
                    "totalProcessingTime": int(elapsed * 1000),
                }
            )
        return out


def _locator(offset: int) -> str:
    # Opaque locators like "MTAwMDA" (base64 of the offset, unpadded), as the results page shows.
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str) -> int | None:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _csv_value(col: Column, row: Any) -> str:
    src = col.source
    if src == "id":
        return str(row.id)
    if src == "deleted":
        return "true" if row.deleted else "false"
    if src == "modstamp":
        return format_datetime_bulk(row.modstamp)
    if src == "created":
        return format_datetime_bulk(row.created)
    v = row.data.get(col.name)
    if v is None:
        return USER_ID if col.name in ("OwnerId", "CreatedById", "LastModifiedById") else ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if col.type in _FLOAT_TYPES and isinstance(v, int | float):
        return repr(float(v))
    if col.type == "datetime" and isinstance(v, str) and v.endswith("+0000"):
        return v[: -len("+0000")] + "Z"
    return str(v)


class BulkJobs:
    """The org's Bulk API 2.0 query jobs (thread-safe)."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sb = sandbox
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._created: list[float] = []
        self.daily_job_limit = DAILY_JOB_LIMIT
        self.order_by_timeout_rows = ORDER_BY_TIMEOUT_ROWS
        self.unsupported_objects: set[str] = set()
        self.enabled = True
        self.deleted = 0  # jobs deleted by clients (result retention)

    def open_jobs(self) -> int:
        """Jobs the org still keeps (not deleted)."""
        with self._lock:
            return len(self._jobs)

    def created_today(self) -> int:
        """Query jobs created in the last 24 hours (DailyBulkV2QueryJobs)."""
        cutoff = time.time() - 86400
        with self._lock:
            self._created = [t for t in self._created if t > cutoff]
            return len(self._created)

    def _get(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    async def create_or_list(self, request: Request) -> Response:
        version = request.path_params["version"]
        if request.method == "GET":
            with self._lock:
                jobs = list(self._jobs.values())
            return json_response(
                {"done": True, "records": [j.info(full=False) for j in jobs], "nextRecordsUrl": None}
            )
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(400, "INVALIDJOB", "Invalid job definition")
        operation = payload.get("operation")
        if operation not in ("query", "queryAll"):
            raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
        soql = payload.get("query")
        if not isinstance(soql, str) or not soql.strip():
            raise ApiError(400, "INVALIDJOB", "The query is required for query jobs")
        delimiter = payload.get("columnDelimiter", "COMMA")
        line_ending = payload.get("lineEnding", "LF")
        if delimiter not in _DELIMITERS or line_ending not in _LINE_ENDINGS:
            raise ApiError(400, "INVALIDJOB", "Invalid columnDelimiter or lineEnding")
        if not self.enabled:
            raise ApiError(400, "FeatureNotEnabled", "Bulk API 2.0 is not enabled for this organization")
        q = parse(soql)
        compiled = compile_query(q, self.sb.schema, include_deleted=operation == "queryAll")
        if compiled.sobject in self.unsupported_objects:
            raise ApiError(
                400, "INVALIDENTITY", f"Entity '{compiled.sobject}' is not supported by the Bulk API."
            )
        if self.created_today() >= self.daily_job_limit:
            raise ApiError(
                400, "LIMIT_EXCEEDED", "Max number of Bulk API 2.0 query jobs per 24 hours exceeded"
            )
        # Unsupported in Bulk API 2.0 queries: aggregates such as COUNT(), OFFSET, compound fields:
        # https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/queries.htm
        if any(c.source == "address" for c in compiled.columns):
            # Body as clients match it (Airbyte's Salesforce source keys on this exact message).
            raise ApiError(400, "API_ERROR", "Selecting compound data not supported in Bulk Query")
        if compiled.count_only:
            raise ApiError(400, "API_ERROR", "Aggregate queries are not supported in Bulk API 2.0")
        if q.offset is not None:
            raise ApiError(400, "API_ERROR", "OFFSET is not supported in Bulk API 2.0")
        job = _Job(
            id=make_id("750", self.sb.store.next_num("__bulk_job")),
            operation=operation,
            sobject=compiled.sobject,
            compiled=compiled,
            version=version,
            delimiter=delimiter,
            line_ending=line_ending,
            created_ms=self.sb.store.clock.now_ms(),
            ordered=bool(q.order_by),
        )
        with self._lock:
            self._jobs[job.id] = job
            self._created.append(time.time())
        return json_response(job.info(full=False))

    async def job(self, request: Request) -> Response:
        job = self._get(request.path_params["job"])
        if request.method == "DELETE":
            with self._lock:
                if self._jobs.pop(job.id, None) is not None:
                    self.deleted += 1
            return Response(status_code=204)
        if request.method == "PATCH":
            payload = await read_json(request)
            if not isinstance(payload, dict) or payload.get("state") != "Aborted":
                raise ApiError(400, "INVALIDJOBSTATE", "Query jobs can only be aborted")
            if job.state in ("JobComplete", "Failed"):
                raise ApiError(400, "INVALIDJOBSTATE", f"Job is already in state {job.state}")
            job.state = "Aborted"
            job.finished = time.monotonic()
            return json_response(job.info(full=False))
        if job.state == "UploadComplete":
            job.state = "InProgress"
        elif job.state == "InProgress":
            await asyncio.to_thread(self._complete, job)
        return json_response(job.info(full=True))

    def _complete(self, job: _Job) -> None:
        c = job.compiled
        total = self.sb.store.count(c.sobject, c.where_sql, c.params)
        job.finished = time.monotonic()
        if job.ordered and total > self.order_by_timeout_rows:
            job.state = "Failed"
            job.error_message = (
                "QUERY_TIMEOUT: Your query request was running for too long (ORDER BY disables PK chunking)"
            )
            return
        job.total = min(total, c.limit) if c.limit is not None else total
        job.state = "JobComplete"

    async def results(self, request: Request) -> Response:
        job = self._get(request.path_params["job"])
        if job.state != "JobComplete":
            # Results before completion: 412 JOB_NOT_COMPLETE (older results page):
            # https://developer.salesforce.com/docs/atlas.ja-jp.222.0.api_bulk_v2.meta/api_bulk_v2/query_get_job_results.htm
            raise ApiError(412, "JOB_NOT_COMPLETE", f"Job {job.id} is not complete (state {job.state})")
        raw_locator = request.query_params.get("locator", "")
        offset = 0 if raw_locator in ("", "null") else _offset(raw_locator)
        if offset is None or offset > job.total:
            raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {raw_locator}")
        raw_max = request.query_params.get("maxRecords", "")
        if raw_max and not (raw_max.isdigit() and int(raw_max) > 0):
            raise ApiError(400, "INVALIDPARAMETER", f"Invalid maxRecords: {raw_max}")
        max_records = int(raw_max) if raw_max else DEFAULT_MAX_RECORDS
        start = await asyncio.to_thread(self._start_key, job, offset)
        count = min(max_records, job.total - offset)
        end = offset + count
        headers = {
            "Sforce-NumberOfRecords": str(count),
            "Sforce-Locator": _locator(end) if end < job.total else "null",
        }
        return StreamingResponse(self._csv(job, start, count), media_type="text/csv", headers=headers)

    def _start_key(self, job: _Job, offset: int) -> tuple[Any, ...] | None:
        """Sort key of the row before result ``offset`` (None = start), found from the nearest known set."""
        if offset in job.starts:
            return job.starts[offset]
        base = max(o for o in job.starts if o < offset)
        rows = fetch_page(
            self.sb.store, job.compiled, after=job.starts[base], offset=offset - base - 1, limit=1
        )
        key = sort_key(job.compiled, rows[0]) if rows else None
        job.starts[offset] = key
        return key

    def _csv(self, job: _Job, start: tuple[Any, ...] | None, count: int) -> Iterator[bytes]:
        cols = job.compiled.columns
        buf = io.StringIO()
        writer = csv.writer(
            buf,
            delimiter=_DELIMITERS[job.delimiter],
            lineterminator=_LINE_ENDINGS[job.line_ending],
            quoting=csv.QUOTE_ALL,
        )
        writer.writerow([c.name for c in cols])
        pending = 0
        for row in iter_rows(self.sb.store, job.compiled, after=start, count=count):
            writer.writerow([_csv_value(c, row) for c in cols])
            pending += 1
            if pending >= 2000:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
                pending = 0
        yield buf.getvalue().encode()
