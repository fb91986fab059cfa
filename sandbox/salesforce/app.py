"""The Salesforce emulator: REST API (query/queryAll, sObjects, describe, collections, limits), Bulk API
2.0 query jobs and the OAuth 2.0 web-server flow, over the shared sandbox framework.

What a client sees follows Salesforce's documentation and recorded payloads (see
``/work/shared/vendor-fixtures/salesforce``); each emulated rule names its documentation page next
to the code. simple-salesforce 1.12.10 runs against it unmodified.

Every REST call (everything under ``/services/data/vXX.X/`` except the versions list) needs
``Authorization: Bearer <access token>`` (or ``OAuth <token>``), counts against the org's rolling
24-hour API request allocation and answers with ``Sforce-Limit-Info: api-usage=N/M``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.base import VendorSandbox
from sandbox.faults import FaultDecision, FaultKind
from sandbox.oauth import OAuthServer
from sandbox.records import RecordStore
from sandbox.salesforce import bulk, collections_delete, oauth_pages
from sandbox.salesforce.customobjects import CUSTOM_NAME, custom_key_prefix, custom_object_fields
from sandbox.salesforce.describe import REQUIRED_ON_CREATE, SYSTEM_FIELDS, Schema
from sandbox.salesforce.engine import (
    ORG_ID,
    USER_ID,
    Compiled,
    column_for,
    compile_query,
    fetch_page,
    field_value,
    render_record,
    sort_key,
)
from sandbox.salesforce.http import JSON_TYPE, ApiError, bearer_token, json_response, read_json
from sandbox.salesforce.ids import is_valid_id, make_id, to_18
from sandbox.salesforce.latecommit import LateCommits, Transaction
from sandbox.salesforce.querybatch import batch_size_for
from sandbox.salesforce.recyclebin import RecycleBin
from sandbox.salesforce.seed import seed_records
from sandbox.salesforce.soql import Query, SoqlError, parse

__all__ = ["SalesforceSandbox", "identity_url", "sign_identity"]

_VERSION_RE = re.compile(r"^v(\d{2})\.0$")
MIN_VERSION, MAX_VERSION = 31, 62
# The documented per-request limit of sObject Collections:
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
COLLECTION_LIMIT = 200
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_TEXT_TYPES = frozenset({"string", "picklist", "email", "phone", "textarea", "url", "reference"})
_NUMBER_TYPES = frozenset({"double", "int", "currency", "percent"})


class _RollingCounter:
    """Events in the last 24 hours, in one-minute buckets (the daily API allocation is rolling:
    https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm)."""

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()
        self._total = 0
        self._lock = threading.Lock()

    def _trim(self, minute: int) -> None:
        while self._buckets and self._buckets[0][0] <= minute - 1440:
            self._total -= self._buckets.popleft()[1]

    def count(self) -> int:
        with self._lock:
            self._trim(int(time.time() // 60))
            return self._total

    def add(self, n: int = 1) -> int:
        minute = int(time.time() // 60)
        with self._lock:
            self._trim(minute)
            if self._buckets and self._buckets[-1][0] == minute:
                self._buckets[-1][1] += n
            else:
                self._buckets.append([minute, n])
            self._total += n
            return self._total

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._total = 0


@dataclass
class _Cursor:
    locator: str
    token: str
    version: str
    compiled: Compiled
    total: int
    batch: int
    positions: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class _Outcome:
    """One record's result in a write call (sObject Collections item shape)."""

    id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    created: bool | None = None
    apply: Callable[[], str] | None = None

    def body(self, *, upsert: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["success"] = not self.errors
        out["errors"] = self.errors
        if upsert and not self.errors:
            out["created"] = bool(self.created)
        return out


def _err(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


def release_label(major: int) -> str:
    """Release name of API version ``major`` (59 → "Winter '24"; three releases a year)."""
    season = ("Winter", "Spring", "Summer")[(major - 59) % 3]
    return f"{season} '{24 + (major - 59) // 3}"


URI_LIMIT = 16_384
"""Bytes a REST call's URI and headers may take together (Salesforce Help article 000386264)."""


class SalesforceSandbox(VendorSandbox):
    """One emulated Salesforce org (Developer/Enterprise-like) with Contact, Account and Lead.

    Options: ``api_version`` (what clients use by default; any ``v31.0``..``v62.0`` is served),
    ``daily_api_limit`` (rolling 24 h REST allocation), ``query_batch_size`` (default REST query
    page size), ``rotate_refresh_tokens``, ``store_path`` (SQLite file, default in memory),
    ``cursor_ttl_s`` (query locator inactivity timeout), ``max_open_cursors`` (per user).

    A default connected app is registered (``self.client``) with ``redirect_uris``.
    """

    name = "salesforce"

    def __init__(
        self,
        *,
        api_version: str = "v59.0",
        daily_api_limit: int = 100_000,
        query_batch_size: int = 2000,
        rotate_refresh_tokens: bool = False,
        store_path: str = ":memory:",
        cursor_ttl_s: float = 900.0,
        max_open_cursors: int = 10,
        redirect_uris: Iterable[str] = ("http://127.0.0.1:8765/oauth/callback",),
        store: RecordStore | None = None,
        instance_name: str = "EU44",
    ) -> None:
        super().__init__(
            store=store or RecordStore(store_path),
            oauth=OAuthServer(access_ttl_s=7200, rotate_refresh_tokens=rotate_refresh_tokens),
        )
        self.api_version = api_version if api_version.startswith("v") else f"v{api_version}"
        # The org's instance (Organization.InstanceName, e.g. "EU44", "NA135"); the default is an EU
        # instance, matching the demo's EEA tenant.
        self.instance_name = instance_name
        self.daily_api_limit = daily_api_limit
        self.query_batch_size = query_batch_size
        self.cursor_ttl_s = cursor_ttl_s
        self.max_open_cursors = max_open_cursors
        self.schema = Schema()
        self.client = self.oauth.register_client(list(redirect_uris), name="crmhub")
        self._usage = _RollingCounter()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._cursor_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self.jobs = bulk.BulkJobs(self)
        self.late = LateCommits(self, self.store.clock)
        self.recycle_bin = RecycleBin(self)
        self._index_ready = False
        self._ensure_indexes()

    # -- Python handle ----------------------------------------------------------------------------

    @property
    def api_usage(self) -> int:
        """REST requests counted in the rolling 24-hour window."""
        return self._usage.count()

    def set_daily_limit(self, limit: int, *, used: int | None = None) -> None:
        """Change the org's daily API allocation; ``used`` resets the usage counter to that value."""
        self.daily_api_limit = limit
        if used is not None:
            self._usage.reset()
            if used:
                self._usage.add(used)

    def issue_token(self, scope: str = "api refresh_token") -> str:
        """A fresh access token for the default connected app (skips the browser flow)."""
        return self.oauth.issue_direct(self.client.client_id, scope).access_token

    def add_custom_object(
        self, name: str, label: str, plural: str, fields: Sequence[Mapping[str, Any]]
    ) -> str:
        """Define a custom object (``Project__c``) as Setup would; returns its key prefix. ``fields``
        are its own ``__c`` fields (see :func:`sandbox.salesforce.customobjects.custom_object_fields`);
        an ``externalId`` one is indexed like ``External_Id__c``."""
        if not CUSTOM_NAME.match(name):
            raise ValueError(f"custom object {name!r}: a custom object's API name ends in __c")
        prefix = custom_key_prefix(self.schema.custom_count() + 1)
        self.schema.add_object(name, label, plural, custom_object_fields(label, fields), prefix)
        for f in self.schema.fields(name):
            if f.get("externalId"):
                self.store.ensure_field_index(name, f["name"])
        return prefix

    def add_field(self, obj: str, field_def: dict[str, Any]) -> None:
        """Add a field to ``obj``'s schema (shows in describe; queryable at once)."""
        self.schema.add_field(obj, field_def)

    def drop_field(self, obj: str, name: str) -> bool:
        """Remove a field from ``obj``'s schema; queries naming it now fail with INVALID_FIELD."""
        return self.schema.drop_field(obj, name)

    def retype_field(self, obj: str, name: str, new_type: str, **changes: Any) -> None:
        """Change a field's describe type (e.g. ``string`` → ``double``)."""
        self.schema.retype_field(obj, name, new_type, **changes)

    def _ensure_indexes(self) -> None:
        # (queryAll's (obj, modstamp, id) index over live and deleted rows is in the store schema.)
        for obj in self.schema.objects():
            self.store.ensure_field_index(obj, "External_Id__c")

    def _object(self, obj: str) -> str:
        canonical = self.schema.canonical_object(obj)
        if canonical is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return canonical

    def object_name(self, obj: str) -> str:
        """The canonical API name of ``obj``; ApiError 404 NOT_FOUND if the org has no such object."""
        return self._object(obj)

    @property
    def write_lock(self) -> threading.RLock:
        """Held while a write validates and applies (so concurrent writes see each other)."""
        return self._write_lock

    @staticmethod
    def _with_name(obj: str, data: dict[str, Any]) -> dict[str, Any]:
        if obj in ("Contact", "Lead"):
            # Person-name compound: Name = FirstName LastName (read-only, derived).
            parts = [data.get("FirstName"), data.get("LastName")]
            data["Name"] = " ".join(str(p) for p in parts if p) or None
        return data

    def create_record(self, obj: str, fields: Mapping[str, Any]) -> str:
        obj = self._object(obj)
        serial = self.store.next_num(obj)
        sf_id = make_id(self.schema.key_prefix(obj), serial)
        data = self._with_name(obj, {k: v for k, v in fields.items() if k not in SYSTEM_FIELDS})
        stamp = self.store.clock.now_ms()
        # Through self.late: a long transaction or the late-commit mode may hold it back.
        self.late.write(lambda: self.store.insert(obj, sf_id, data, num=serial, modstamp=stamp))
        return sf_id

    def update_record(self, obj: str, id: str, fields: Mapping[str, Any]) -> bool:
        obj = self._object(obj)
        with self._write_lock:
            current = self.store.get(obj, id)
            if current is None:
                return False
            changes = {k: v for k, v in fields.items() if k not in SYSTEM_FIELDS}
            if obj in ("Contact", "Lead"):
                changes = self._with_name(obj, {**current.data, **changes})
            stamp = self.store.clock.now_ms()
            self.late.write(lambda: self.store.update(obj, id, changes, modstamp=stamp))
            return True

    def delete_record(self, obj: str, id: str) -> bool:
        obj = self._object(obj)
        if self.store.get(obj, id) is None:
            return False
        stamp = self.store.clock.now_ms()
        self.late.write(lambda: self.store.set_deleted(obj, id, True, modstamp=stamp))
        return True

    def long_transaction(self) -> Transaction:
        """Begin a long transaction: its writes are stamped now, visible at ``commit()``."""
        return self.late.transaction()

    def merge_records(
        self, obj: str, master_id: str, loser_ids: list[str], fields: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Merge one or two records into ``master_id`` (see :mod:`sandbox.salesforce.recyclebin`)."""
        return self.recycle_bin.merge(self._object(obj), master_id, loser_ids, fields)

    def empty_recycle_bin(self, obj: str | None = None) -> int:
        """Purge the deleted records of ``obj`` (default: all objects) for good; returns how many."""
        return self.recycle_bin.empty(None if obj is None else self._object(obj))

    def undelete_record(self, obj: str, id: str) -> bool:
        """Restore a record from the recycle bin (bumps SystemModstamp)."""
        return self.store.set_deleted(self._object(obj), id, False)

    def seed(self, counts: Mapping[str, int], *, seed: int = 1) -> dict[str, int]:
        return seed_records(self, counts, seed=seed)

    # -- app --------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        d = "/services/data/{version}"
        api = self._api
        routes: list[BaseRoute] = [
            *oauth_pages.routes(self),
            Route("/services/data", self._versions, methods=["GET"]),
            Route("/services/data/", self._versions, methods=["GET"]),
        ]
        table: list[tuple[str, str, Callable[[Request], Awaitable[Response]], list[str]]] = [
            (f"{d}", "sf.resources", self._resources, ["GET"]),
            (f"{d}/limits", "sf.limits", self._limits, ["GET"]),
            (f"{d}/query", "sf.query", self._query, ["GET"]),
            (f"{d}/queryAll", "sf.queryAll", self._query_all, ["GET"]),
            (f"{d}/query/{{locator}}", "sf.query_more", self._query_more, ["GET"]),
            (f"{d}/queryAll/{{locator}}", "sf.query_more", self._query_more, ["GET"]),
            (f"{d}/sobjects", "sf.describe_global", self._describe_global, ["GET"]),
            (f"{d}/sobjects/{{obj}}/describe", "sf.describe", self._describe, ["GET"]),
            (f"{d}/sobjects/{{obj}}/deleted", "sf.deleted", self.recycle_bin.deleted, ["GET"]),
            (f"{d}/sobjects/{{obj}}/updated", "sf.updated", self.recycle_bin.updated, ["GET"]),
            (f"{d}/sobjects/{{obj}}", "sf.sobject", self._sobject_root, ["GET", "POST"]),
            (f"{d}/sobjects/{{obj}}/{{id}}", "sf.record", self._record, ["GET", "PATCH", "DELETE"]),
            (
                f"{d}/sobjects/{{obj}}/{{field}}/{{value}}",
                "sf.record_by_external_id",
                self._record_ext,
                ["GET", "PATCH", "DELETE"],
            ),
            (f"{d}/composite/sobjects", "sf.collections", self._collections, ["POST", "PATCH", "DELETE"]),
            (
                f"{d}/composite/sobjects/{{obj}}/{{field}}",
                "sf.collections_upsert",
                self._collections_upsert,
                ["PATCH"],
            ),
            (f"{d}/jobs/query", "sf.bulk2.jobs", self.jobs.create_or_list, ["GET", "POST"]),
            (f"{d}/jobs/query/{{job}}", "sf.bulk2.job", self.jobs.job, ["GET", "PATCH", "DELETE"]),
            (f"{d}/jobs/query/{{job}}/results", "sf.bulk2.results", self.jobs.results, ["GET"]),
        ]
        for path, name, fn, methods in table:
            handler = api(name, fn)
            routes.append(Route(path, handler, methods=methods))
            routes.append(Route(path + "/", handler, methods=methods))
        return routes

    def _api(
        self, name: str, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a REST handler: version check, session check, API allocation, Sforce-Limit-Info."""

        async def handler(request: Request) -> Response:
            version = request.path_params.get("version", "")
            m = _VERSION_RE.match(version)
            if m is None or not MIN_VERSION <= int(m.group(1)) <= MAX_VERSION:
                return json_response(
                    ApiError(404, "NOT_FOUND", "The requested resource does not exist").body(), 404
                )
            token = bearer_token(request)
            if token is None or self.oauth.authenticate(token) is None:
                # 401 + INVALID_SESSION_ID for a missing/expired/revoked token:
                # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
                return json_response(
                    [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401
                )
            if self._usage.count() >= self.daily_api_limit:
                # Allocation exhausted → 403 REQUEST_LIMIT_EXCEEDED (errorcodes page; body as recorded).
                return json_response(
                    [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                    403,
                    {"Sforce-Limit-Info": f"api-usage={self._usage.count()}/{self.daily_api_limit}"},
                )
            used = self._usage.add()
            self.late.commit_due()  # writes whose long transaction has ended become visible
            self.recycle_bin.sweep()  # and records 15 days in the bin are gone
            try:
                response = await fn(request)
            except ApiError as exc:
                response = json_response(exc.body(), exc.status)
            except SoqlError as exc:
                response = json_response([{"message": exc.message, "errorCode": exc.code}], 400)
            # Sforce-Limit-Info on every REST response:
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
            response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{self.daily_api_limit}"
            return response

        handler.__sandbox_endpoint__ = name  # type: ignore[attr-defined]
        handler.__name__ = name.replace(".", "_")
        return handler

    def render_fault(self, decision: FaultDecision, endpoint_name: str) -> Response:
        """Injected faults in Salesforce's shapes.

        RATE_LIMIT: Salesforce does not answer REST calls with 429; its throttle for too many
        concurrent long-running requests is 403 REQUEST_LIMIT_EXCEEDED "ConcurrentPerOrgLongTxn
        Limit exceeded." (https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm),
        sent here with the fault's Retry-After. SERVER_ERROR: 503 SERVER_UNAVAILABLE / 500
        UNKNOWN_EXCEPTION (errorcodes page). MALFORMED: a 200 whose JSON body is cut short.
        OAuth endpoints answer with the OAuth error object instead.
        """
        retry = {"Retry-After": str(max(1, round(decision.retry_after_s)))} if decision.retry_after_s else {}
        oauth = endpoint_name.startswith("sf.oauth")
        if decision.kind is FaultKind.RATE_LIMIT:
            if oauth:
                return json_response(
                    {"error": "rate_limited", "error_description": "too many requests"}, 429, retry
                )
            return json_response(
                [
                    {
                        "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                        "errorCode": "REQUEST_LIMIT_EXCEEDED",
                    }
                ],
                403,
                retry,
            )
        if decision.kind is FaultKind.SERVER_ERROR:
            status = decision.status or 503
            if oauth:
                return json_response(
                    {"error": "server_error", "error_description": "internal server error"}, status, retry
                )
            if status == 503:
                body = [
                    {
                        "message": "Server is unavailable; please retry later.",
                        "errorCode": "SERVER_UNAVAILABLE",
                    }
                ]
            else:
                body = [
                    {
                        "message": "An unexpected error occurred. Please include this ErrorId if you contact "
                        "support: 1297356417-1337 (-1234567890)",
                        "errorCode": "UNKNOWN_EXCEPTION",
                    }
                ]
            return json_response(body, status, retry)
        # MALFORMED (TIMEOUT/DROP are handled by the framework)
        return Response(
            b'{"totalSize":1,"done":true,"records":[{"attributes":{"type"', 200, media_type=JSON_TYPE
        )

    # -- versions / resources / limits ------------------------------------------------------------

    async def _versions(self, request: Request) -> Response:
        # No auth and no Sforce-Limit-Info on the versions resource:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_versions.htm
        body = [
            {"label": release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(MIN_VERSION, MAX_VERSION + 1)
        ]
        return json_response(body)

    async def _resources(self, request: Request) -> Response:
        v = request.path_params["version"]
        names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
        return json_response({n: f"/services/data/{v}/{n}" for n in names})

    async def _limits(self, request: Request) -> Response:
        # Shape of GET /limits: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
        used = self._usage.count()
        body: dict[str, dict[str, int]] = {
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            "ConcurrentSyncReportRuns": {"Max": 20, "Remaining": 20},
            "DailyApiRequests": {
                "Max": self.daily_api_limit,
                "Remaining": max(self.daily_api_limit - used, 0),
            },
            "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000 - self.jobs.created_today()},
            "DailyDurableGenericStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
            "DailyDurableStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
            "DailyGenericStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
            "DailyStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
            "DailyWorkflowEmails": {"Max": 390, "Remaining": 390},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
            "DurableStreamingApiConcurrentClients": {"Max": 20, "Remaining": 20},
            "FileStorageMB": {"Max": 20, "Remaining": 20},
            "HourlyAsyncReportRuns": {"Max": 1200, "Remaining": 1200},
            "HourlyDashboardRefreshes": {"Max": 200, "Remaining": 200},
            "HourlyDashboardResults": {"Max": 5000, "Remaining": 5000},
            "HourlyDashboardStatuses": {"Max": 999999999, "Remaining": 999999999},
            "HourlyODataCallout": {"Max": 10000, "Remaining": 10000},
            "HourlySyncReportRuns": {"Max": 500, "Remaining": 500},
            "HourlyTimeBasedWorkflow": {"Max": 50, "Remaining": 50},
            "MassEmail": {"Max": 10, "Remaining": 10},
            "SingleEmail": {"Max": 15, "Remaining": 15},
            "StreamingApiConcurrentClients": {"Max": 20, "Remaining": 20},
        }
        return json_response(body)

    # -- query ------------------------------------------------------------------------------------

    async def _query(self, request: Request) -> Response:
        return await self._run_query(request, include_deleted=False)

    async def _query_all(self, request: Request) -> Response:
        # queryAll adds rows deleted into the recycle bin (IsDeleted true):
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_queryall.htm
        return await self._run_query(request, include_deleted=True)

    def _batch_size(self, request: Request) -> int:
        # Sforce-Query-Options: batchSize=n, 200..2000, default 2000; not a guarantee:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
        raw = request.headers.get("sforce-query-options", "")
        for part in raw.split(","):
            key, _, value = part.strip().partition("=")
            if key.strip().lower() == "batchsize" and value.strip().isdigit():
                return max(200, min(2000, int(value.strip())))
        return self.query_batch_size

    async def _run_query(self, request: Request, *, include_deleted: bool) -> Response:
        # A REST call's URI and headers may not exceed 16,384 bytes together: 414 when the URI
        # alone does, else 431 (Salesforce Help article 000386264). The error body is a guess.
        uri = len(request.scope.get("raw_path") or b"") + len(request.scope.get("query_string") or b"") + 1
        heads = sum(len(k) + len(v) + 4 for k, v in request.scope.get("headers") or [])
        if uri > URI_LIMIT or uri + heads > URI_LIMIT:
            status, what = (414, "URI Too Long") if uri > URI_LIMIT else (431, "Header Fields Too Large")
            raise ApiError(status, "REQUEST_TOO_LARGE", f"{what}: URI and headers exceed {URI_LIMIT} bytes")
        soql = request.query_params.get("q")
        if soql is None or not soql.strip():
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        version = request.path_params["version"]
        token = bearer_token(request) or ""
        batch = self._batch_size(request)
        body = await asyncio.to_thread(self._first_page, soql, version, token, batch, include_deleted)
        return json_response(body)

    def _first_page(
        self, soql: str, version: str, token: str, batch: int, include_deleted: bool
    ) -> dict[str, Any]:
        query = parse(soql)
        if query.sobject.lower() == "organization":
            return self._organization(query, version)
        compiled = compile_query(query, self.schema, include_deleted=include_deleted)
        matching = self.store.count(compiled.sobject, compiled.where_sql, compiled.params)
        total = max(0, matching - compiled.offset)
        if compiled.limit is not None:
            total = min(total, compiled.limit)
        if compiled.count_only:
            # SELECT COUNT(): the count is totalSize, no records.
            # https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_count.htm
            return {"totalSize": total, "done": True, "records": []}
        batch = batch_size_for(batch, compiled, self.schema.field_map(compiled.sobject))
        rows = fetch_page(self.store, compiled, after=None, offset=compiled.offset, limit=min(batch, total))
        return self._page_body(compiled, rows, 0, total, batch, version, token, None)

    def _organization(self, query: Query, version: str) -> dict[str, Any]:
        """The org's one ``Organization`` row: Id, Name, InstanceName, IsSandbox, OrganizationType
        (fields of the Organization object: https://developer.salesforce.com/docs/atlas.en-us.sfFieldRef.meta/
        sfFieldRef/salesforce_field_reference_Organization.htm); other fields are INVALID_FIELD."""
        org_id = "00D000000000001EAA"
        values: dict[str, Any] = {
            "Id": org_id,
            "Name": "crmhub sandbox org",
            "InstanceName": self.instance_name,
            "IsSandbox": False,
            "OrganizationType": "Enterprise Edition",
        }
        known = {k.lower(): k for k in values}
        record: dict[str, Any] = {
            "attributes": {
                "type": "Organization",
                "url": f"/services/data/{version}/sobjects/Organization/{org_id}",
            }
        }
        for ref in query.fields:
            name = known.get(ref.name.lower())
            if name is None:
                raise SoqlError("INVALID_FIELD", f"No such column '{ref.name}' on entity 'Organization'")
            record[name] = values[name]
        return {"totalSize": 1, "done": True, "records": [record]}

    def _page_body(
        self,
        compiled: Compiled,
        rows: list[Any],
        start: int,
        total: int,
        batch: int,
        version: str,
        token: str,
        cursor: _Cursor | None,
    ) -> dict[str, Any]:
        served = start + len(rows)
        done = served >= total or not rows
        body: dict[str, Any] = {"totalSize": total, "done": done}
        if not done:
            if cursor is None:
                cursor = self._open_cursor(token, version, compiled, total, batch)
            cursor.positions[served] = sort_key(compiled, rows[-1])
            # nextRecordsUrl is a server-relative path .../query/<locator>-<offset> (also for queryAll):
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{cursor.locator}-{served}"
        elif cursor is not None:
            self._close_cursor(cursor.locator)
        body["records"] = [render_record(compiled, row, version) for row in rows]
        return body

    def _open_cursor(self, token: str, version: str, compiled: Compiled, total: int, batch: int) -> _Cursor:
        with self._cursor_lock:
            self._expire_cursors()
            # At most 10 open query cursors per user; opening another releases the oldest:
            # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_query_querylocator.htm
            mine = [c for c in self._cursors.values() if c.token == token]
            while len(mine) >= self.max_open_cursors:
                oldest = mine.pop(0)
                self._cursors.pop(oldest.locator, None)
            locator = make_id("01g", self.store.next_num("__query_locator"))
            cursor = _Cursor(locator, token, version, compiled, total, batch)
            self._cursors[locator] = cursor
            return cursor

    def _close_cursor(self, locator: str) -> None:
        with self._cursor_lock:
            self._cursors.pop(locator, None)

    def _expire_cursors(self) -> None:
        # Locators expire after 15 minutes of inactivity (same QueryLocator page).
        now = time.monotonic()
        for loc in [loc for loc, c in self._cursors.items() if now - c.last_used > self.cursor_ttl_s]:
            del self._cursors[loc]

    async def _query_more(self, request: Request) -> Response:
        locator, _, offset_text = request.path_params["locator"].rpartition("-")
        version = request.path_params["version"]
        with self._cursor_lock:
            self._expire_cursors()
            cursor = self._cursors.get(locator)
            if cursor is not None:
                cursor.last_used = time.monotonic()
                self._cursors.move_to_end(locator)
        if cursor is None or not offset_text.isdigit() or int(offset_text) not in cursor.positions:
            # https://help.salesforce.com/s/articleView?id=000384958&type=1 (INVALID_QUERY_LOCATOR)
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        start = int(offset_text)

        def page() -> dict[str, Any]:
            assert cursor is not None
            compiled = cursor.compiled
            rows = fetch_page(
                self.store,
                compiled,
                after=cursor.positions[start],
                offset=0,
                limit=min(cursor.batch, cursor.total - start),
            )
            return self._page_body(
                compiled, rows, start, cursor.total, cursor.batch, version, cursor.token, cursor
            )

        return json_response(await asyncio.to_thread(page))

    # -- describe ---------------------------------------------------------------------------------

    async def _describe_global(self, request: Request) -> Response:
        return json_response(self.schema.global_describe(request.path_params["version"]))

    async def _describe(self, request: Request) -> Response:
        obj = self._object(request.path_params["obj"])
        return json_response(self.schema.describe(obj, request.path_params["version"]))

    # -- single records ---------------------------------------------------------------------------

    async def _sobject_root(self, request: Request) -> Response:
        obj = self._object(request.path_params["obj"])
        version = request.path_params["version"]
        if request.method == "GET":
            summary = next(s for s in self.schema.global_describe(version)["sobjects"] if s["name"] == obj)
            return json_response({"objectDescribe": summary, "recentItems": []})
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from START_ARRAY"
            )
        new_id = (
            await asyncio.to_thread(self._write_atomic, lambda: self._create_one(obj, payload, None))
        ).id
        # Create → 201 {"id", "success", "errors"}:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_sobject_create.htm
        return json_response({"id": new_id, "success": True, "errors": []}, 201)

    def _live(self, obj: str, sf_id: str) -> Any:
        if not is_valid_id(sf_id):
            raise ApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {sf_id}"
            )
        row = self.store.get(obj, to_18(sf_id), include_deleted=True)
        if row is None or row.deleted:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return row

    def _record_body(self, obj: str, row: Any, version: str, only: str | None) -> dict[str, Any]:
        fields = self.schema.fields(obj)
        if only:
            wanted = {f.strip().lower() for f in only.split(",")}
            fields = [f for f in fields if f["name"].lower() in wanted]
        out: dict[str, Any] = {
            "attributes": {"type": obj, "url": f"/services/data/{version}/sobjects/{obj}/{row.id}"}
        }
        for f in fields:
            out[f["name"]] = field_value(column_for(f), row)
        return out

    async def _record(self, request: Request) -> Response:
        obj = self._object(request.path_params["obj"])
        sf_id = request.path_params["id"]
        version = request.path_params["version"]
        if request.method == "GET":
            row = self._live(obj, sf_id)
            return json_response(self._record_body(obj, row, version, request.query_params.get("fields")))
        if request.method == "DELETE":
            if not is_valid_id(sf_id):
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"Provided external ID field does not exist or is not accessible: {sf_id}",
                )
            row = self.store.get(obj, to_18(sf_id), include_deleted=True)
            if row is None:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            if row.deleted:
                raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
            self.store.set_deleted(obj, row.id, True)
            return Response(status_code=204)
        # PATCH → update, 204 No Content:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from START_ARRAY"
            )
        row = self._live(obj, sf_id)
        await asyncio.to_thread(self._write_atomic, lambda: self._update_one(obj, row.id, payload, None))
        return Response(status_code=204)

    def _external_field(self, obj: str, name: str) -> str:
        f = self.schema.field_map(obj).get(name.lower())
        if f is None or not (f["externalId"] or f["name"] == "Id" or f["idLookup"]):
            raise ApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}"
            )
        return str(f["name"])

    async def _record_ext(self, request: Request) -> Response:
        obj = self._object(request.path_params["obj"])
        ext = self._external_field(obj, request.path_params["field"])
        value = request.path_params["value"]
        version = request.path_params["version"]
        matches = self._find_live(obj, ext, value)
        if request.method == "GET":
            if not matches:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            if len(matches) > 1:
                return json_response(
                    [f"/services/data/{version}/sobjects/{obj}/{r.id}" for r in matches], 300
                )
            return json_response(
                self._record_body(obj, matches[0], version, request.query_params.get("fields"))
            )
        if request.method == "DELETE":
            if not matches:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            self.store.set_deleted(obj, matches[0].id, True)
            return Response(status_code=204)
        payload = await read_json(request)
        if not isinstance(payload, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from START_ARRAY"
            )
        if len(matches) > 1:
            # 300 when an external id matches several records (errorcodes page).
            return json_response([f"/services/data/{version}/sobjects/{obj}/{r.id}" for r in matches], 300)

        def write() -> _Outcome:
            again = self._find_live(obj, ext, value)  # re-checked under the write lock
            if again:
                return self._update_one(obj, again[0].id, payload, None)
            return self._create_one(obj, {**payload, ext: value}, None)

        outcome = await asyncio.to_thread(self._write_atomic, write)
        new_id, created = outcome.id, bool(outcome.created)
        # Upsert: 201 + created true on insert, 200 + created false on update (API 46.0+):
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        return json_response(
            {"id": new_id, "success": True, "errors": [], "created": created}, 201 if created else 200
        )

    def _write_atomic(self, make: Callable[[], _Outcome]) -> _Outcome:
        """Validate and apply one record write under the write lock; errors raise ApiError (400)."""
        with self._write_lock:
            outcome = make()
            if outcome.errors:
                raise _as_api_error(outcome.errors)
            assert outcome.apply is not None
            outcome.id = outcome.apply()
            return outcome

    def _find_live(self, obj: str, field_name: str, value: Any) -> list[Any]:
        if field_name == "Id":
            if not isinstance(value, str) or not is_valid_id(value):
                return []
            row = self.store.get(obj, to_18(value))
            return [row] if row is not None else []
        return self.store.find(obj, field_name, value)

    # -- validation and writes --------------------------------------------------------------------

    def _validate(
        self,
        obj: str,
        payload: Mapping[str, Any],
        *,
        creating: bool,
        self_id: str | None,
        claims: dict[tuple[str, str], str],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Field-level checks in Salesforce's words; returns (clean changes, errors)."""
        fmap = self.schema.field_map(obj)
        clean: dict[str, Any] = {}
        for key in payload:
            if key == "attributes" or (key == "Id" and not creating):
                continue
            f = fmap.get(key.lower())
            if f is None:
                return {}, [_err("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj}")]
            if key == "Id" and creating:
                if payload[key] is None:
                    continue
                return {}, [
                    _err("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
                ]
            if not (f["createable"] if creating else f["updateable"]):
                return {}, [
                    _err(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {f['name']}. "
                        "Please check the security settings of this "
                        "field and verify that it is read/write for your profile or permission set.",
                        [f["name"]],
                    )
                ]
            clean[f["name"]] = payload[key]
        errors: list[dict[str, Any]] = []
        if creating:
            # Required fields: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_concepts_core_data_objects.htm
            missing = [n for n in REQUIRED_ON_CREATE.get(obj, ()) if clean.get(n) in (None, "")]
            if missing:
                errors.append(
                    _err(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{', '.join(missing)}]",
                        missing,
                    )
                )
        else:
            blanked = [n for n in REQUIRED_ON_CREATE.get(obj, ()) if n in clean and clean[n] in (None, "")]
            if blanked:
                errors.append(
                    _err(
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{', '.join(blanked)}]",
                        blanked,
                    )
                )
        for name, value in clean.items():
            f = fmap[name.lower()]
            label, ftype = f["label"], f["type"]
            if value is None:
                continue
            if ftype in _TEXT_TYPES and ftype != "reference":
                if not isinstance(value, str):
                    value = clean[name] = (
                        str(value) if not isinstance(value, bool) else ("true" if value else "false")
                    )
                if f["length"] and len(value) > f["length"]:
                    errors.append(
                        _err(
                            "STRING_TOO_LONG",
                            f"{label}: data value too large: {value} (max length={f['length']})",
                            [name],
                        )
                    )
                    continue
                if ftype == "email" and not _EMAIL_RE.match(value):
                    # Message format from the composite doc's example:
                    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm
                    errors.append(
                        _err("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", [name])
                    )
                    continue
            elif ftype in _NUMBER_TYPES:
                if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                    try:
                        clean[name] = float(value) if ftype != "int" else int(value)
                        if not _finite(clean[name]):  # "NaN", "Infinity", "1e999": not a number here
                            raise ValueError("not finite")
                    except (TypeError, ValueError, OverflowError):
                        errors.append(
                            _err(
                                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                                f"{label}: value not of required type: {value}",
                                [name],
                            )
                        )
                        continue
            elif ftype == "boolean" and not isinstance(value, bool):
                errors.append(
                    _err(
                        "INVALID_TYPE_ON_FIELD_IN_RECORD",
                        f"{label}: value not of required type: {value}",
                        [name],
                    )
                )
                continue
            elif ftype == "reference" and not (isinstance(value, str) and is_valid_id(value)):
                errors.append(_err("MALFORMED_ID", f"{label}: id value of incorrect type: {value}", [name]))
                continue
            if f["unique"]:
                claim_key = (name, str(value).lower())
                holder = claims.get(claim_key)
                if holder is None:
                    existing = [r for r in self.store.find(obj, name, value) if r.id != self_id]
                    holder = existing[0].id if existing else None
                if holder is not None and holder != self_id:
                    # DUPLICATE_VALUE wording (DOC_NOTES.md: third-party captures, no vendor page found).
                    errors.append(
                        _err(
                            "DUPLICATE_VALUE",
                            f"duplicate value found: {name} duplicates value on record with id: {holder}",
                        )
                    )
        return clean, errors

    def _claim(
        self, obj: str, clean: Mapping[str, Any], sf_id: str, claims: dict[tuple[str, str], str]
    ) -> None:
        fmap = self.schema.field_map(obj)
        for name, value in clean.items():
            if value is not None and fmap[name.lower()]["unique"]:
                claims[(name, str(value).lower())] = sf_id

    def _create_one(
        self, obj: str, payload: Mapping[str, Any], claims: dict[tuple[str, str], str] | None
    ) -> _Outcome:
        claims = {} if claims is None else claims
        clean, errors = self._validate(obj, payload, creating=True, self_id=None, claims=claims)
        if errors:
            return _Outcome(errors=errors, created=True)
        serial = self.store.next_num(obj)
        sf_id = make_id(self.schema.key_prefix(obj), serial)
        self._claim(obj, clean, sf_id, claims)
        defaults = {"Status": "Open - Not Contacted"} if obj == "Lead" else {}
        data = self._with_name(obj, {**defaults, **clean})

        def apply() -> str:
            self.store.insert(obj, sf_id, data, num=serial)
            return sf_id

        return _Outcome(id=sf_id, created=True, apply=apply)

    def _update_one(
        self, obj: str, sf_id: str, payload: Mapping[str, Any], claims: dict[tuple[str, str], str] | None
    ) -> _Outcome:
        claims = {} if claims is None else claims
        clean, errors = self._validate(obj, payload, creating=False, self_id=sf_id, claims=claims)
        if errors:
            return _Outcome(id=sf_id, errors=errors, created=False)
        self._claim(obj, clean, sf_id, claims)

        def apply() -> str:
            with self._write_lock:
                current = self.store.get(obj, sf_id)
                changes = dict(clean)
                if current is not None and obj in ("Contact", "Lead"):
                    changes = self._with_name(obj, {**current.data, **clean})
                self.store.update(obj, sf_id, changes)
            return sf_id

        return _Outcome(id=sf_id, created=False, apply=apply)

    # -- sObject Collections ----------------------------------------------------------------------

    async def _collections_payload(self, request: Request) -> tuple[bool, list[Any]]:
        payload = await read_json(request)
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must contain a 'records' list")
        records = payload["records"]
        if len(records) > COLLECTION_LIMIT:
            # More than 200 records: whole request refused (EXCEEDED_ID_LIMIT, the platform's
            # "cannot submit more than 200 records" error; limit from the collections doc above).
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        return bool(payload.get("allOrNone", False)), records

    async def _collections(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await collections_delete.delete(self, request)
        all_or_none, records = await self._collections_payload(request)
        creating = request.method == "POST"

        def run() -> list[dict[str, Any]]:
            with self._write_lock:
                claims: dict[tuple[str, str], str] = {}
                outcomes = [self._collection_item(rec, creating, claims) for rec in records]
                return self._finish(outcomes, all_or_none, upsert=False)

        return json_response(await asyncio.to_thread(run))

    def _record_type(self, rec: Any) -> str | None:
        if not isinstance(rec, dict):
            return None
        attrs = rec.get("attributes")
        t = attrs.get("type") if isinstance(attrs, dict) else None
        return self.schema.canonical_object(t) if isinstance(t, str) else None

    def _collection_item(self, rec: Any, creating: bool, claims: dict[tuple[str, str], str]) -> _Outcome:
        obj = self._record_type(rec)
        if obj is None:
            return _Outcome(errors=[_err("INVALID_TYPE", "Must specify a valid sObject type in attributes")])
        assert isinstance(rec, dict)
        if creating:
            return self._create_one(obj, rec, claims)
        sf_id = rec.get("Id")
        if not sf_id:
            return _Outcome(errors=[_err("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])])
        if not isinstance(sf_id, str) or not is_valid_id(sf_id):
            return _Outcome(errors=[_err("MALFORMED_ID", f"malformed id {sf_id}", ["Id"])])
        row = self.store.get(obj, to_18(sf_id), include_deleted=True)
        if row is None:
            return _Outcome(
                id=to_18(sf_id), errors=[_err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")]
            )
        if row.deleted:
            return _Outcome(id=row.id, errors=[_err("ENTITY_IS_DELETED", "entity is deleted")])
        return self._update_one(obj, row.id, rec, claims)

    def _finish(self, outcomes: list[_Outcome], all_or_none: bool, *, upsert: bool) -> list[dict[str, Any]]:
        """Apply the valid writes (all or none), and build the per-record results in request order.

        With allOrNone, one failure rolls everything back and the records without their own error
        report ALL_OR_NONE_OPERATION_ROLLED_BACK:
        https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_header_allornoneheader.htm
        """
        failed = any(o.errors for o in outcomes)
        if all_or_none and failed:
            out = []
            for o in outcomes:
                if o.errors:
                    out.append(
                        o.body(upsert=upsert)
                        if o.created is False
                        else {"success": False, "errors": o.errors}
                    )
                else:
                    rolled = _err(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using "
                        "AllOrNone header",
                    )
                    out.append({"success": False, "errors": [rolled]})
            return out
        for o in outcomes:
            if not o.errors and o.apply is not None:
                o.apply()
        return [o.body(upsert=upsert) for o in outcomes]

    async def _collections_upsert(self, request: Request) -> Response:
        # Upsert by external id (API 46+; one object type per call):
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm
        obj = self._object(request.path_params["obj"])
        ext = self._external_field(obj, request.path_params["field"])
        all_or_none, records = await self._collections_payload(request)

        def run() -> list[dict[str, Any]]:
            with self._write_lock:
                return upsert_all()

        def upsert_all() -> list[dict[str, Any]]:
            seen: dict[str, int] = {}
            for rec in records:
                if isinstance(rec, dict) and rec.get(ext) is not None:
                    k = str(rec[ext]).lower()
                    seen[k] = seen.get(k, 0) + 1
            claims: dict[tuple[str, str], str] = {}
            outcomes: list[_Outcome] = []
            for rec in records:
                rtype = self._record_type(rec)
                if rtype is None or rtype != obj:
                    outcomes.append(_Outcome(errors=[_err("INVALID_TYPE", f"Record type must be {obj}")]))
                    continue
                assert isinstance(rec, dict)
                value = rec.get(ext)
                if value is None and ext == "Id":
                    outcomes.append(
                        self._create_one(obj, {k: v for k, v in rec.items() if k != "Id"}, claims)
                    )
                    continue
                if value is None:
                    outcomes.append(
                        _Outcome(errors=[_err("MISSING_ARGUMENT", f"{ext} not specified", [ext])])
                    )
                    continue
                if seen.get(str(value).lower(), 0) > 1:
                    outcomes.append(
                        _Outcome(
                            errors=[
                                _err(
                                    "DUPLICATE_EXTERNAL_ID",
                                    f"Duplicate external id specified: {value}",
                                    [ext],
                                )
                            ]
                        )
                    )
                    continue
                matches = self._find_live(obj, ext, value)
                if ext == "Id" and not matches:
                    outcomes.append(
                        _Outcome(errors=[_err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")])
                    )
                elif len(matches) > 1:
                    outcomes.append(
                        _Outcome(
                            errors=[
                                _err(
                                    "DUPLICATE_EXTERNAL_ID",
                                    f"{ext}: more than one record found for external id field: "
                                    f"{[r.id for r in matches]}",
                                    [ext],
                                )
                            ]
                        )
                    )
                elif matches:
                    body = {k: v for k, v in rec.items() if k != ext or ext != "Id"}
                    outcomes.append(self._update_one(obj, matches[0].id, body, claims))
                else:
                    outcomes.append(self._create_one(obj, rec, claims))
            return self._finish(outcomes, all_or_none, upsert=True)

        return json_response(await asyncio.to_thread(run))


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _as_api_error(errors: list[dict[str, Any]]) -> ApiError:
    first = errors[0]
    return ApiError(400, first["statusCode"], first["message"], list(first.get("fields", [])))


def sign_identity(client_secret: str, identity_url: str, issued_at: str) -> str:
    """The token response ``signature``: base64 HMAC-SHA256 of id + issued_at keyed by the client secret
    (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_understanding_web_server_oauth_flow.htm)."""
    mac = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def identity_url(base_url: str) -> str:
    """The ``id`` of the org's integration user (identity URL)."""
    return f"{base_url}/id/{ORG_ID}/{USER_ID}"
