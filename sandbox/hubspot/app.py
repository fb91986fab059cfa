"""The HubSpot sandbox: CRM v3 objects, search, batch, properties, OAuth and rate limits.

Endpoints (``{t}`` is ``contacts``, ``companies`` or ``deals``, or their ``0-1``/``0-2``/``0-3`` ids)::

    GET    /crm/v3/objects/{t}                      list (limit ≤ 100, default 10; after; archived)
    POST   /crm/v3/objects/{t}                      create → 201
    GET    /crm/v3/objects/{t}/{id}                 read (idProperty, properties, archived)
    PATCH  /crm/v3/objects/{t}/{id}                 update (idProperty)
    DELETE /crm/v3/objects/{t}/{id}                 archive → 204
    POST   /crm/v3/objects/{t}/search               search (see sandbox.hubspot.search)
    POST   /crm/v3/objects/{t}/merge                merge two records (see sandbox.hubspot.merges)
    POST   /crm/v3/objects/contacts/gdpr-delete     delete a contact permanently → 204
    POST   /crm/v3/objects/{t}/batch/{read,create,update,upsert,archive}
    GET    /crm/v3/properties/{t}                   property definitions (archived=true: archived only)
    POST   /crm/v3/properties/{t}                   create a property → 201
    GET    /crm/v3/properties/{t}/{name}            one property
    DELETE /crm/v3/properties/{t}/{name}            archive a property → 204
    POST   /crm/v3/exports/export/async            start a VIEW export to CSV → 202 TaskLocator
    GET    /crm/v3/exports/export/async/tasks/{taskId}/status   PENDING|PROCESSING|COMPLETE|CANCELED,
                                                    a fresh 5-minute download link once COMPLETE
    GET    /__sandbox/files/exports/{token}/{file}  the export file behind such a link (no auth)
    GET    /oauth/authorize, POST /oauth/authorize  consent page (sandbox.hubspot.oauth_pages)
    POST   /oauth/v1/token                          token endpoint
    GET    /oauth/v1/access-tokens/{token}, GET|DELETE /oauth/v1/refresh-tokens/{token}
    DELETE /appinstalls/v3/external-install         uninstall the app (Bearer access token) → 204

Every ``/crm`` call needs ``Authorization: Bearer`` with an OAuth access token or a private-app
token (:meth:`HubSpotSandbox.issue_private_app_token`), passes the rate limiter and carries the
``X-HubSpot-RateLimit-*`` headers; the exports API also needs the ``crm.export`` scope (see
sandbox.hubspot.exports; private-app tokens carry no scope list and count as granted it). Endpoint
names for fault rules are ``hs.<op>.<object>`` (``hs.list.contacts``, ``hs.search.deals``,
``hs.batch.upsert.contacts``...), ``hs.properties.*``, ``hs.exports.start``, ``hs.exports.status``,
``hs.exports.download`` and ``hs.oauth.*``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.base import Handler, VendorSandbox, endpoint
from sandbox.faults import FaultDecision, FaultKind
from sandbox.hubspot.associations import Associations
from sandbox.hubspot.errors import (
    CRM_ERROR_LINKS,
    MISSING_AUTH_MESSAGE,
    ApiError,
    error_response,
    json_response,
    rate_limit_response,
)
from sandbox.hubspot.exports import (
    DEFAULT_DAILY_EXPORTS,
    DEFAULT_PARTITION_ROWS,
    DEFAULT_WINDOW_S,
    DOWNLOAD_PATH,
    EXPORT_SCOPE,
    ExportEngine,
    ExportTaskInfo,
    parse_export_request,
)
from sandbox.hubspot.merges import Merges
from sandbox.hubspot.oauth_pages import OAuthPages
from sandbox.hubspot.objects import CrmObjects
from sandbox.hubspot.objecttypes import CustomRoutes
from sandbox.hubspot.quirks import Quirks, decode_list_cursor, encode_list_cursor
from sandbox.hubspot.ratelimit import Limited, RateLimiter
from sandbox.hubspot.schema import (
    FIELD_TYPES,
    OBJECT_TYPES,
    ObjectType,
    PropertyDef,
    PropertyError,
    PropertyRegistry,
    iso_ms,
    object_type,
)
from sandbox.hubspot.schemas import CustomSchemas
from sandbox.hubspot.search import compile_search
from sandbox.hubspot.seed import company_rows, contact_rows, deal_rows
from sandbox.jsonbody import BadJson, parse_body
from sandbox.oauth import OAuthClient, OAuthServer, TokenGrant
from sandbox.records import RecordRow, RecordStore

__all__ = ["HubSpotSandbox"]

# Batch endpoints take at most 100 inputs (widely relied on; HubSpot's CRM guides describe batches
# "of up to 100 records": https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/guide).
MAX_BATCH = 100
# GET /crm/v3/objects/{t}: limit defaults to 10 (spec, contacts_v3_operations.hubspot_spec.json) and is
# at most 100 (https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/guide, "Retrieve contacts").
DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 100

_Inner = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class _Auth:
    private_app: bool
    scopes: frozenset[str] = frozenset()

    def allows(self, scope: str) -> bool:
        # Private-app tokens are minted without a scope list; the sandbox treats them as granted all.
        return self.private_app or scope in self.scopes


# HubSpot's 403 for a token without a required scope (the exports API's documented body).
SCOPES_LINK = "https://developers.hubspot.com/scopes"
MISSING_SCOPES_MESSAGE = (
    "This app hasn't been granted all required scopes to make this call. Read more about required "
    f"scopes here: {SCOPES_LINK}."
)
# S3-style body of a refused signed file link.
_LINK_REFUSED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>The export link has expired or is invalid</Message></Error>"
)


def _now_iso() -> str:
    return iso_ms(int(time.time() * 1000))


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = parse_body(await request.body(), empty={})
    except BadJson as exc:
        raise ApiError(400, "VALIDATION_ERROR", f"Invalid input JSON on line 1: {exc.reason}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
    return body


def _properties_param(request: Request, name: str = "properties") -> list[str] | None:
    """``properties`` as repeated params (hubspot-api-client's "multi" format) or comma-separated."""
    values = request.query_params.getlist(name)
    names = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return names or None


def _bool_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").strip().lower() == "true"


def _inputs(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: inputs must be a list of objects")
    if len(inputs) > MAX_BATCH:
        # Message text not verified against a live body (no capture found); category/status are.
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Batch size of {len(inputs)} exceeds the limit of {MAX_BATCH} inputs",
            links=CRM_ERROR_LINKS,
        )
    return inputs


def _properties_of(item: Mapping[str, Any]) -> Mapping[str, Any]:
    props = item.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
    return props


def _named(name: str, fn: _Inner) -> Handler:
    """A fresh function carrying the endpoint name (``endpoint()`` cannot tag bound methods)."""

    async def handler(request: Request) -> Response:
        return await fn(request)

    return endpoint(name)(handler)


def _display_order(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: displayOrder must be an integer")
    return value


def _duplicates(keys: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for k in keys:
        if k in seen and k not in dups:
            dups.append(k)
        seen.add(k)
    return dups


class HubSpotSandbox(VendorSandbox):
    """One emulated HubSpot portal (see the module docstring for the API it serves).

    ``burst_limit`` requests per ``burst_window_s`` (default 190/10 s, the documented private-app
    Professional/Enterprise tier; ``None`` disables), ``search_per_second`` (default 5, documented;
    ``None`` disables), ``daily_limit`` (default 650,000, Professional). ``store_path`` puts the
    records in a SQLite file instead of memory.

    Exports: ``export_limit`` starts per rolling 24 hours (default 30, documented),
    ``export_partition_rows`` rows per CSV file before the result becomes a ZIP (default 1,000,000,
    documented), ``export_rows_per_s`` (``None``: as fast as the sandbox writes; else an export takes
    at least rows/rate seconds, like HubSpot's processing time) and ``export_queue_delay_s`` (how long
    an export stays PENDING at least).
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        store: RecordStore | None = None,
        store_path: str = ":memory:",
        burst_limit: int | None = 190,
        burst_window_s: float = 10.0,
        search_per_second: int | None = 5,
        daily_limit: int = 650_000,
        portal_id: int = 24_681_357,
        require_pkce: bool = False,
        export_limit: int = DEFAULT_DAILY_EXPORTS,
        export_partition_rows: int = DEFAULT_PARTITION_ROWS,
        export_rows_per_s: float | None = None,
        export_queue_delay_s: float = 0.0,
        quirks: Quirks | None = None,
        data_hosting_location: str = "eu1",
    ) -> None:
        super().__init__(
            store=store or RecordStore(store_path),
            oauth=OAuthServer(access_ttl_s=1800, rotate_refresh_tokens=False, require_pkce=require_pkce),
        )
        self.portal_id = portal_id
        # Where the portal's data lives, as GET /account-info/v3/details answers it ("na1", "eu1", …);
        # the default matches the demo's EEA tenant.
        self.data_hosting_location = data_hosting_location
        self.quirks = quirks or Quirks()
        self.user_id = 7_654_321
        self.user_email = "sandbox-admin@crmhub.test"
        self.hub_domain = "crmhub-sandbox.hubspot.test"
        self.properties = PropertyRegistry()
        self.objects = CrmObjects(self.store, self.properties, portal_id)
        self.schemas = CustomSchemas(portal_id, self.properties)
        self.merges = Merges(self.store, self.objects)
        self.associations = Associations(self.store)
        self.limits = RateLimiter(
            burst_limit=burst_limit,
            burst_window_s=burst_window_s,
            search_per_second=search_per_second,
            daily_limit=daily_limit,
        )
        self.exports = ExportEngine(
            self.store,
            self.objects,
            daily_limit=export_limit,
            partition_rows=export_partition_rows,
            rows_per_s=export_rows_per_s,
            queue_delay_s=export_queue_delay_s,
        )
        self._private_tokens: dict[str, str] = {}
        self._app_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pages = OAuthPages(self)
        self._custom = CustomRoutes(self)
        for ot in OBJECT_TYPES.values():
            for prop in ("external_id", *(("email",) if ot.name == "contacts" else ())):
                self.store.ensure_field_index(ot.name, prop)

    # -- Python handle ---------------------------------------------------------------------------

    def _ot(self, obj: str) -> ObjectType:
        ot = object_type(obj)
        custom = None if ot is not None else self.schemas.resolve(obj, by_name=True)
        if custom is not None:
            return custom.ot
        if ot is None:
            raise ValueError(f"unknown HubSpot object type {obj!r}; use one of {sorted(OBJECT_TYPES)}")
        return ot

    def live_records(self, obj: str) -> list[dict[str, Any]]:
        """Every live record of ``obj`` (a standard or custom object, by any of its names)."""
        return super().live_records(self._ot(obj).name)

    def create_schema(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Define a custom object as ``POST /crm/v3/schemas`` does; returns its schema."""
        return self._custom.define(body)

    def issue_private_app_token(self, name: str = "crmhub private app") -> str:
        """A static private-app access token (``pat-na1-<uuid>``), valid until revoked."""
        token = f"pat-na1-{uuid.uuid4()}"
        with self._lock:
            self._private_tokens[token] = name
        return token

    def revoke_private_app_token(self, token: str) -> bool:
        with self._lock:
            return self._private_tokens.pop(token, None) is not None

    def register_app(self, redirect_uris: list[str], *, name: str = "crmhub") -> OAuthClient:
        """Register a public (OAuth) app; its redirect URIs must later match exactly."""
        client = self.oauth.register_client(redirect_uris, name=name)
        self.app_id(client.client_id)
        return client

    def app_id(self, client_id: str) -> int:
        """A stable numeric app id per OAuth client (HubSpot's ``app_id``)."""
        with self._lock:
            return self._app_ids.setdefault(client_id, 1_000_000 + len(self._app_ids) + 1)

    def issue_oauth_tokens(
        self, client_id: str, scope: str = "crm.objects.contacts.read oauth"
    ) -> TokenGrant:
        """Tokens without the browser flow (tests, benchmarks, the demo's fast path)."""
        return self.oauth.issue_direct(client_id, scope)

    def set_burst_limit(self, limit: int | None, window_s: float | None = None) -> None:
        """Requests per rolling window (``None`` disables the burst limit)."""
        self.limits.set_burst(limit, window_s)

    def set_search_limit(self, per_second: int | None) -> None:
        self.limits.set_search_limit(per_second)

    def set_daily_limit(self, limit: int) -> None:
        self.limits.set_daily_limit(limit)

    def set_export_timing(self, *, rows_per_s: float | None = None, queue_delay_s: float = 0.0) -> None:
        """How exports requested from now on progress: ``rows_per_s`` (``None``: as fast as the sandbox
        writes) and at least ``queue_delay_s`` PENDING. The defaults restore full speed."""
        self.exports.set_timing(rows_per_s=rows_per_s, queue_delay_s=queue_delay_s)

    def set_export_limit(self, limit: int, window_s: float = DEFAULT_WINDOW_S) -> None:
        """At most ``limit`` exports started per rolling ``window_s`` (default 24 hours)."""
        self.exports.set_limit(limit, window_s)

    def set_export_partition_rows(self, rows: int) -> None:
        """Rows per CSV file of exports requested from now on; more make the result a ZIP."""
        self.exports.set_partition_rows(rows)

    def export_tasks(self) -> list[ExportTaskInfo]:
        """Every export started on this portal, oldest first (status, rows written, files)."""
        return self.exports.tasks()

    def expire_export_links(self) -> int:
        """Make every export download link minted so far expire now; returns how many were valid."""
        return self.exports.expire_links()

    def close_exports(self) -> None:
        """Cancel queued and running exports and delete their files (and the sandbox's export
        directory); exports started later work as before."""
        self.exports.close()

    def add_property(
        self,
        obj: str,
        name: str,
        *,
        type: str = "string",
        field_type: str = "text",
        label: str | None = None,
        options: Sequence[str] = (),
        has_unique_value: bool = False,
        group_name: str | None = None,
    ) -> PropertyDef:
        """Create a custom property (schema drift); raises :class:`PropertyError` on a taken name."""
        ot = self._ot(obj)
        now = self.store.clock.now_ms()
        prop = PropertyDef(
            name,
            label or name.replace("_", " ").capitalize(),
            type,
            field_type,
            group_name
            or {"contacts": "contactinformation", "companies": "companyinformation"}.get(
                ot.name, "dealinformation"
            ),
            options=tuple((o, o) for o in options),
            has_unique_value=has_unique_value,
            created_at_ms=now,
            updated_at_ms=now,
        )
        added = self.properties.add(ot.name, prop)
        if has_unique_value:
            self.store.ensure_field_index(ot.name, name)
        return added

    def drop_property(self, obj: str, name: str) -> bool:
        """Archive a property: its values stop being returned and writes naming it fail."""
        return self.properties.archive(self._ot(obj).name, name, self.store.clock.now_ms())

    def retype_property(
        self,
        obj: str,
        name: str,
        type: str,
        field_type: str | None = None,
        options: Sequence[str] | None = None,
    ) -> PropertyDef:
        """Change a property's type (and field type/options); stored values are left as they are."""
        default_field = {"number": "number", "bool": "booleancheckbox", "enumeration": "select"}.get(
            type, "text"
        )
        if type in ("date", "datetime"):
            default_field = "date"
        return self.properties.retype(
            self._ot(obj).name,
            name,
            type_=type,
            field_type=field_type or default_field,
            options=tuple((o, o) for o in options) if options is not None else None,
            now_ms=self.store.clock.now_ms(),
        )

    # -- VendorSandbox record operations --------------------------------------------------------

    def create_record(self, obj: str, fields: Mapping[str, Any]) -> str:
        ot = self._ot(obj)
        values, problems = self.objects.normalize(ot, fields)
        if problems:
            raise ValueError(f"invalid HubSpot property values: {problems}")
        with self.objects.write_lock:
            return self.objects.insert(ot, values, self.store.clock.now_ms()).id

    def update_record(self, obj: str, id: str, fields: Mapping[str, Any]) -> bool:
        ot = self._ot(obj)
        values, problems = self.objects.normalize(ot, fields)
        if problems:
            raise ValueError(f"invalid HubSpot property values: {problems}")
        with self.objects.write_lock:
            row = self.store.get(ot.name, id)
            if row is None:
                return False
            self.objects.patch(ot, row, values, self.store.clock.now_ms())
            return True

    def delete_record(self, obj: str, id: str) -> bool:
        return self.store.set_deleted(self._ot(obj).name, id, True, modstamp=self.store.clock.now_ms())

    def seed(self, counts: Mapping[str, int], *, seed: int = 1) -> dict[str, int]:
        """Add ``counts`` fake records per object (``contacts``, ``companies``, ``deals``).

        Record ids continue the object's sequence; fake index = id - 1, so re-seeding continues the
        same deterministic stream.
        """
        added: dict[str, int] = {}
        makers = {"contacts": contact_rows, "companies": company_rows, "deals": deal_rows}
        for obj, n in counts.items():
            ot = self._ot(obj)
            if n <= 0:
                continue
            first = self.store.next_num(ot.name, n)
            added[ot.name] = self.store.insert_many(makers[ot.name](seed, first, first - 1, n))
        return added

    # -- faults ---------------------------------------------------------------------------------

    def render_fault(self, decision: FaultDecision, endpoint_name: str) -> Response:
        if decision.kind is FaultKind.RATE_LIMIT:
            return rate_limit_response(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
                decision.retry_after_s,
            )
        if decision.kind is FaultKind.SERVER_ERROR:
            status = decision.status or 503
            # HubSpot documents 500/502/503/504 and 521-524 as retryable server-side failures
            # (https://developers.hubspot.com/docs/api-reference/error-handling); its 500 body is the
            # usual envelope with message "internal error".
            message = {
                500: "internal error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                504: "Gateway Timeout",
            }
            return error_response(status, "INTERNAL_ERROR", message.get(status, "internal error"))
        # MALFORMED (DROP/TIMEOUT are handled by the base class): a 200 whose JSON stops mid-way.
        return Response(
            b'{"results":[{"id":"1","properties":{"email":"trunc', 200, media_type="application/json"
        )

    # -- auth, limits and the handler wrapper ---------------------------------------------------

    def _authenticate(self, request: Request) -> _Auth | Response:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return error_response(401, "INVALID_AUTHENTICATION", MISSING_AUTH_MESSAGE)
        token = header[7:].strip()
        with self._lock:
            private = token in self._private_tokens
        if private:
            return _Auth(private_app=True)
        if (live := self.oauth.authenticate(token)) is not None:
            return _Auth(private_app=False, scopes=frozenset(live.scope.split()))
        record = self.oauth.peek_access(token)
        if record is None:
            return error_response(401, "INVALID_AUTHENTICATION", MISSING_AUTH_MESSAGE)
        # Expired (or worn out by the token_expiry_after_calls fault): HubSpot's EXPIRED_AUTHENTICATION
        # body, error_401_expired_authentication.captured.json.
        now = time.time()
        expired_at = min(record.expires_at, now)
        ago = max(int(now - expired_at), 0)
        return error_response(
            401,
            "EXPIRED_AUTHENTICATION",
            f"The OAuth token used to make this call expired {ago} second(s) ago.",
            context={"expire time": [iso_ms(int(expired_at * 1000))]},
        )

    def _api(
        self,
        name: str,
        inner: _Inner,
        *,
        search: bool = False,
        scope: str | Callable[[Request], str | None] | None = None,
    ) -> Handler:
        """Auth, the rate limiter, ``scope`` (403 MISSING_SCOPES without it; a callable names the
        scope a request needs, or None) and ApiError rendering."""
        sandbox = self

        async def handler(request: Request) -> Response:
            auth = sandbox._authenticate(request)
            if isinstance(auth, Response):
                return auth
            state = sandbox.limits.hit(search=search)
            if isinstance(state, Limited):
                return rate_limit_response(
                    state.policy,
                    state.message,
                    state.retry_after_s,
                    send_retry_after=sandbox.quirks.retry_after_header,
                )
            try:
                needed = scope(request) if callable(scope) else scope
                if needed is not None and not auth.allows(needed):
                    raise ApiError(
                        403,
                        "MISSING_SCOPES",
                        MISSING_SCOPES_MESSAGE,
                        errors=[
                            {
                                "message": "One or more of the following scopes are required.",
                                "context": {"requiredGranularScopes": [needed]},
                            }
                        ],
                        links={"scopes": SCOPES_LINK},
                    )
                response = await inner(request)
            except ApiError as exc:
                response = exc.response()
            if not search:
                # Search answers carry no X-HubSpot-RateLimit-* headers, only the correlation id
                # (https://community.hubspot.com/t5/Developer-Announcements/Rate-limit-headers-will-now-appear-for-OAuth-authenticated-calls/m-p/399520).
                response.headers.update(sandbox.limits.headers(state, private_app=auth.private_app))
            return response

        return endpoint(name)(handler)

    # -- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for ot in OBJECT_TYPES.values():
            for seg in (ot.name, ot.type_id):
                base = f"/crm/v3/objects/{seg}"
                n = ot.name
                routes += [
                    Route(f"{base}/merge", self._api(f"hs.merge.{n}", self._merge(ot)), methods=["POST"]),
                    Route(
                        f"{base}/search",
                        self._api(f"hs.search.{n}", self._search(ot), search=True),
                        methods=["POST"],
                    ),
                    *(
                        [
                            Route(
                                f"{base}/gdpr-delete",
                                self._api("hs.gdpr_delete.contacts", self._gdpr),
                                methods=["POST"],
                            )
                        ]
                        if n == "contacts"
                        else []
                    ),
                    Route(
                        f"{base}/batch/read",
                        self._api(f"hs.batch.read.{n}", self._batch_read(ot)),
                        methods=["POST"],
                    ),
                    Route(
                        f"{base}/batch/create",
                        self._api(f"hs.batch.create.{n}", self._batch_create(ot)),
                        methods=["POST"],
                    ),
                    Route(
                        f"{base}/batch/update",
                        self._api(f"hs.batch.update.{n}", self._batch_update(ot)),
                        methods=["POST"],
                    ),
                    Route(
                        f"{base}/batch/upsert",
                        self._api(f"hs.batch.upsert.{n}", self._batch_upsert(ot)),
                        methods=["POST"],
                    ),
                    Route(
                        f"{base}/batch/archive",
                        self._api(f"hs.batch.archive.{n}", self._batch_archive(ot)),
                        methods=["POST"],
                    ),
                    Route(base, self._api(f"hs.list.{n}", self._list(ot)), methods=["GET"]),
                    Route(base, self._api(f"hs.create.{n}", self._create(ot)), methods=["POST"]),
                    Route(f"{base}/{{objectId}}", self._api(f"hs.get.{n}", self._get(ot)), methods=["GET"]),
                    Route(
                        f"{base}/{{objectId}}",
                        self._api(f"hs.update.{n}", self._update(ot)),
                        methods=["PATCH"],
                    ),
                    Route(
                        f"{base}/{{objectId}}",
                        self._api(f"hs.archive.{n}", self._archive(ot)),
                        methods=["DELETE"],
                    ),
                ]
        routes += self.associations.routes(self._api)
        routes += self._custom.routes()
        routes += [
            Route(
                "/account-info/v3/details",
                self._api("hs.account_info.details", self._account_details),
                methods=["GET"],
            ),
            Route(
                "/crm/v3/objects/{objectType}",
                self._api("hs.objects.unknown", self._unknown_type),
                methods=["GET", "POST"],
            ),
            Route(
                "/crm/v3/objects/{objectType}/{rest:path}",
                self._api("hs.objects.unknown", self._unknown_type),
                methods=["GET", "POST", "PATCH", "DELETE"],
            ),
            Route(
                "/crm/v3/properties/{objectType}",
                self._api("hs.properties.list", self._properties_list),
                methods=["GET"],
            ),
            Route(
                "/crm/v3/properties/{objectType}",
                self._api("hs.properties.create", self._properties_create),
                methods=["POST"],
            ),
            Route(
                "/crm/v3/properties/{objectType}/{propertyName}",
                self._api("hs.properties.get", self._properties_get),
                methods=["GET"],
            ),
            Route(
                "/crm/v3/properties/{objectType}/{propertyName}",
                self._api("hs.properties.archive", self._properties_archive),
                methods=["DELETE"],
            ),
            Route(
                "/crm/v3/exports/export/async",
                self._api("hs.exports.start", self._export_start, scope=EXPORT_SCOPE),
                methods=["POST"],
            ),
            Route(
                "/crm/v3/exports/export/async/tasks/{taskId}/status",
                self._api("hs.exports.status", self._export_status, scope=EXPORT_SCOPE),
                methods=["GET"],
            ),
            Route(
                DOWNLOAD_PATH + "/{token}/{filename}",
                _named("hs.exports.download", self._export_download),
                methods=["GET"],
            ),
            Route(
                "/oauth/authorize",
                _named("hs.oauth.authorize", self._pages.authorize),
                methods=["GET", "POST"],
            ),
            Route("/oauth/v1/token", _named("hs.oauth.token", self._pages.token), methods=["POST"]),
            Route(
                "/oauth/v1/access-tokens/{token}",
                _named("hs.oauth.access_token", self._pages.access_token_info),
                methods=["GET"],
            ),
            Route(
                "/oauth/v1/refresh-tokens/{token}",
                _named("hs.oauth.refresh_token", self._pages.refresh_token),
                methods=["GET", "DELETE"],
            ),
            Route(
                "/appinstalls/v3/external-install",
                _named("hs.appinstalls.uninstall", self._uninstall),
                methods=["DELETE"],
            ),
        ]
        return routes

    async def _account_details(self, request: Request) -> Response:
        # The account information API's details, with the portal's dataHostingLocation:
        # https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-account-details
        # (fields as documented there; the values besides portalId/dataHostingLocation are the sandbox's).
        return json_response(
            {
                "portalId": self.portal_id,
                "accountType": "STANDARD",
                "timeZone": "Europe/Berlin",
                "companyCurrency": "EUR",
                "additionalCurrencies": [],
                "utcOffset": "+01:00",
                "utcOffsetMilliseconds": 3_600_000,
                "uiDomain": "app-eu1.hubspot.com"
                if self.data_hosting_location.startswith("eu")
                else "app.hubspot.com",
                "dataHostingLocation": self.data_hosting_location,
            }
        )

    async def _uninstall(self, request: Request) -> Response:
        """``DELETE /appinstalls/v3/external-install`` (App uninstalls API): an OAuth access token
        with the ``oauth`` scope uninstalls the app from its portal → 204. The docs say the app is
        removed from the account; that every token of the install stops working with it (here: all
        of the app's tokens, the sandbox being one portal) is a guess."""
        auth = self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        token = request.headers["authorization"][7:].strip()
        live = self.oauth.peek_access(token)
        if auth.private_app or live is None:
            return error_response(401, "INVALID_AUTHENTICATION", MISSING_AUTH_MESSAGE)
        if "oauth" not in auth.scopes:
            return error_response(403, "MISSING_SCOPES", MISSING_SCOPES_MESSAGE)
        self.oauth.revoke_client(live.client_id)
        return Response(status_code=204)

    async def _unknown_type(self, request: Request) -> Response:
        raise ApiError(
            400, "VALIDATION_ERROR", f"Unable to infer object type from: {request.path_params['objectType']}"
        )

    # -- objects --------------------------------------------------------------------------------

    def _render(
        self, ot: ObjectType, rows: Sequence[RecordRow], names: Sequence[str]
    ) -> list[dict[str, Any]]:
        return [self.objects.render(ot, r, names) for r in rows]

    def _list(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            q = request.query_params
            try:
                limit = int(q.get("limit", DEFAULT_LIST_LIMIT))
            except ValueError as exc:
                raise ApiError(400, "VALIDATION_ERROR", "limit must be an integer") from exc
            start = decode_list_cursor(q.get("after") or "")
            if start is None:  # e.g. an encoded cursor encoded once more: text is the emulator's
                raise ApiError(400, "VALIDATION_ERROR", "Invalid paging cursor (after)")
            if not 1 <= limit <= MAX_LIST_LIMIT or not 0 <= start < 2**63:
                raise ApiError(400, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_LIST_LIMIT}")
            archived = _bool_param(request, "archived")
            names = self.objects.output_properties(ot, _properties_param(request))
            # ids ascend with creation; ``after`` is the next id to return (an opaque string to clients).
            rows = self.store.select(
                ot.name, "deleted = ? AND num >= ?", (int(archived), start), order_by="num", limit=limit + 1
            )
            body: dict[str, Any] = {"results": self._render(ot, rows[:limit], names)}
            if len(rows) > limit:
                after = encode_list_cursor(rows[limit - 1].num + 1, encoded=self.quirks.encoded_list_cursors)
                # paging shape of paging_next_page.example.hubspot_spec.json; like the live API the
                # link is absolute and keeps the request's query (clients such as dlt follow it as is)
                link = str(request.url.include_query_params(after=unquote(after)))
                body["paging"] = {"next": {"after": after, "link": link}}
            return json_response(body)

        return handle

    def _get(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            id_prop = self.objects.id_property(ot, request.query_params.get("idProperty"))
            key, archived = request.path_params["objectId"], _bool_param(request, "archived")
            row = self.objects.find(ot, key, id_prop, archived=archived)
            if row is None and id_prop is None and not archived:
                row = self.merges.resolve(ot, key)  # a merged-away id answers the merge's result
            if row is None:
                raise ApiError(404, "", "")  # HubSpot: 404, empty body
            names = self.objects.output_properties(ot, _properties_param(request))
            return json_response(self.objects.render(ot, row, names))

        return handle

    def _merge(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            primary, other = str(body.get("primaryObjectId") or ""), str(body.get("objectIdToMerge") or "")
            with self.objects.write_lock:
                row = self.merges.merge(ot, primary, other, self.store.clock.now_ms())
            return json_response(self.objects.render(ot, row, self.objects.output_properties(ot, None)))

        return handle

    async def _gdpr(self, request: Request) -> Response:
        body = await _json_body(request)
        with self.objects.write_lock:
            self.merges.gdpr_delete(OBJECT_TYPES["contacts"], body)
        return Response(status_code=204)

    def merge_records(self, obj: str, primary_id: str, other_id: str) -> str:
        """Merge two records as ``POST .../merge`` does; returns the resulting record's id."""
        ot = self._ot(obj)
        with self.objects.write_lock:
            return self.merges.merge(ot, primary_id, other_id, self.store.clock.now_ms()).id

    def gdpr_delete(self, obj: str, record_id: str) -> None:
        """Delete a record permanently, as ``POST /crm/v3/objects/contacts/gdpr-delete`` does."""
        with self.objects.write_lock:
            self.merges.gdpr_delete(self._ot(obj), {"objectId": record_id})

    def _create(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            props = body.get("properties") or {}
            if not isinstance(props, Mapping):
                raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
            self.schemas.require(ot, [props])
            row = self.objects.create_checked(ot, props, self.store.clock.now_ms())
            names = self.objects.output_properties(ot, list(props) or None)
            return json_response(self.objects.render(ot, row, names), 201)

        return handle

    def _update(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            body = await _json_body(request)
            props = body.get("properties") or {}
            if not isinstance(props, Mapping):
                raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
            id_prop = self.objects.id_property(ot, request.query_params.get("idProperty"))
            row = self.objects.find(ot, request.path_params["objectId"], id_prop)
            if row is None:
                raise ApiError(404, "OBJECT_NOT_FOUND", "resource not found")
            row = self.objects.update_checked(ot, row, props, self.store.clock.now_ms())
            names = self.objects.output_properties(ot, list(props) or None)
            return json_response(self.objects.render(ot, row, names))

        return handle

    def _archive(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            row = self.objects.find(ot, request.path_params["objectId"], None)
            if row is not None:
                self.store.set_deleted(ot.name, row.id, True, modstamp=self.store.clock.now_ms())
            return Response(status_code=204)  # HubSpot answers 204 whether or not the record existed

        return handle

    # -- batch ----------------------------------------------------------------------------------

    @staticmethod
    def _batch_body(
        results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str
    ) -> dict[str, Any]:
        """Batch envelope: status COMPLETE, results, (numErrors, errors), startedAt, completedAt
        (batch_read_by_email_207_object_not_found.captured.json; spec BatchResponse*WithErrors)."""
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        body["startedAt"] = started
        body["completedAt"] = _now_iso()
        return body

    @staticmethod
    def _not_found_error(ot: ObjectType, verb: str, ids: list[str]) -> dict[str, Any]:
        # Text and shape of the captured batch/read 207 error (OBJECT_NOT_FOUND, context.ids).
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not {verb} some {ot.singular} objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "context": {"ids": ids},
        }

    def _batch_read(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            started = _now_iso()
            body = await _json_body(request)
            inputs = _inputs(body)
            id_prop = self.objects.id_property(ot, body.get("idProperty"))
            archived = _bool_param(request, "archived")
            props = body.get("properties")
            names = self.objects.output_properties(ot, props if isinstance(props, list) else None)
            keys = list(dict.fromkeys(str(i.get("id", "")) for i in inputs))
            results, missing = [], []
            for key in keys:
                row = self.objects.find(ot, key, id_prop, archived=archived)
                if row is None:
                    missing.append(key)
                else:
                    results.append(self.objects.render(ot, row, names))
            errors = [self._not_found_error(ot, "get", missing)] if missing else []
            return json_response(self._batch_body(results, errors, started), 207 if errors else 200)

        return handle

    def _batch_create(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            started = _now_iso()
            inputs = _inputs(await _json_body(request))
            values = self.objects.validate_all(ot, inputs)
            self.schemas.require(ot, values)
            now = self.store.clock.now_ms()
            with self.objects.write_lock:
                for v in values:
                    if (conflict := self.objects.conflicts(ot, v, None)) is not None:
                        raise conflict
                for prop in ("email", *self.properties.unique_properties(ot.name)):
                    dups = _duplicates([str(v[prop]) for v in values if v.get(prop) is not None])
                    if dups:
                        raise ApiError(
                            400, "VALIDATION_ERROR", f"Duplicate values found in batch input: {dups}"
                        )
                rows = [self.objects.insert(ot, v, now) for v in values]
            results = [
                self.objects.render(
                    ot, r, self.objects.output_properties(ot, list(i.get("properties") or {}) or None)
                )
                for r, i in zip(rows, inputs, strict=True)
            ]
            return json_response(self._batch_body(results, [], started), self.quirks.batch_create_status)

        return handle

    def _batch_update(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            started = _now_iso()
            inputs = _inputs(await _json_body(request))
            keys = [str(i.get("id", "")) for i in inputs]
            if dups := _duplicates(keys):
                # HubSpot's text for repeated ids in one batch.
                raise ApiError(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {dups}")
            values = self.objects.validate_all(ot, inputs)
            now = self.store.clock.now_ms()
            results, missing = [], []
            with self.objects.write_lock:
                targets: list[tuple[RecordRow, dict[str, str | None], dict[str, Any]]] = []
                for item, key, v in zip(inputs, keys, values, strict=True):
                    id_prop = self.objects.id_property(ot, item.get("idProperty"))
                    row = self.objects.find(ot, key, id_prop)
                    if row is None:
                        missing.append(key)
                        continue
                    if (conflict := self.objects.conflicts(ot, v, row.id)) is not None:
                        raise conflict
                    targets.append((row, v, item))
                for row, v, item in targets:
                    updated = self.objects.patch(ot, row, v, now)
                    names = self.objects.output_properties(ot, list(item.get("properties") or {}) or None)
                    results.append(self.objects.render(ot, updated, names))
            # Unknown ids: a 207 in the envelope and wording of the captured batch/read error
            # (extrapolated to update; the spec lists 207 for batch/update).
            errors = [self._not_found_error(ot, "update", missing)] if missing else []
            return json_response(self._batch_body(results, errors, started), 207 if errors else 200)

        return handle

    def _batch_upsert(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            """Create-or-update by a unique ``idProperty`` (contacts: ``email``, or a hasUniqueValue
            property); results carry ``new`` (spec SimplePublicUpsertObject;
            https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/guide#upsert-contacts)."""
            started = _now_iso()
            inputs = _inputs(await _json_body(request))
            plans: list[tuple[str, str]] = []
            for item in inputs:
                prop = item.get("idProperty")
                if not prop:
                    raise ApiError(400, "VALIDATION_ERROR", "idProperty is required for upsert")
                id_prop = self.objects.id_property(ot, str(prop))
                key = str(item.get("id") or "").strip()
                if not key or id_prop is None:
                    raise ApiError(
                        400, "VALIDATION_ERROR", "Each upsert input needs an id value for its idProperty"
                    )
                plans.append((id_prop, key.lower() if id_prop == "email" else key))
            if dups := _duplicates([f"{p}={k}" for p, k in plans]):
                raise ApiError(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {dups}")
            merged = [
                {**_properties_of(item), id_prop: key}
                for item, (id_prop, key) in zip(inputs, plans, strict=True)
            ]
            values = self.objects.validate_all(ot, [{"properties": m} for m in merged])
            now = self.store.clock.now_ms()
            results = []
            with self.objects.write_lock:
                existing = [self.objects.find(ot, key, id_prop) for id_prop, key in plans]
                self.schemas.require(ot, [v for row, v in zip(existing, values, strict=True) if row is None])
                for row, v in zip(existing, values, strict=True):
                    if (conflict := self.objects.conflicts(ot, v, row.id if row else None)) is not None:
                        raise conflict
                for row, v, m in zip(existing, values, merged, strict=True):
                    new = row is None
                    out = (
                        self.objects.insert(ot, v, now)
                        if row is None
                        else self.objects.patch(ot, row, v, now)
                    )
                    rendered = self.objects.render(ot, out, self.objects.output_properties(ot, list(m)))
                    rendered["new"] = new
                    results.append(rendered)
            return json_response(self._batch_body(results, [], started))

        return handle

    def _batch_archive(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            inputs = _inputs(await _json_body(request))
            now = self.store.clock.now_ms()
            with self.objects.write_lock:
                for item in inputs:
                    key = str(item.get("id", ""))
                    if key.isdigit():
                        self.store.set_deleted(ot.name, key, True, modstamp=now)
            return Response(status_code=204)

        return handle

    # -- search ---------------------------------------------------------------------------------

    def _search(self, ot: ObjectType) -> _Inner:
        async def handle(request: Request) -> Response:
            lag_s = self.quirks.stale_search_hits_s
            stale_since = self.store.clock.now_ms() - int(lag_s * 1000) if lag_s > 0 else None
            query = compile_search(ot, self.properties, await _json_body(request), stale_since_ms=stale_since)
            rows = self.store.select(
                ot.name,
                query.where,
                query.params,
                order_by=query.order_by,
                limit=query.limit,
                offset=query.offset,
            )
            total = self.store.count(ot.name, query.where, query.params)
            names = self.objects.output_properties(ot, query.properties)
            live = [r for r in rows if not r.deleted]  # stale index hits take a place, show nothing
            body: dict[str, Any] = {"total": total, "results": self._render(ot, live, names)}
            nxt = query.offset + query.limit
            if nxt < total:
                # Offset paging; handed out even at 10,000, where the next request is refused (400).
                body["paging"] = {"next": {"after": str(nxt)}}
            return json_response(body)

        return handle

    # -- properties -----------------------------------------------------------------------------

    def _prop_type(self, request: Request) -> ObjectType:
        ot = object_type(request.path_params["objectType"])
        custom = None if ot is not None else self.schemas.resolve(request.path_params["objectType"])
        if custom is not None:
            return custom.ot
        if ot is None:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Unable to infer object type from: {request.path_params['objectType']}",
            )
        return ot

    async def _properties_list(self, request: Request) -> Response:
        ot = self._prop_type(request)
        props = self.properties.all(ot.name, archived=_bool_param(request, "archived"))
        wanted = _properties_param(request)
        if wanted:
            props = [p for p in props if p.name in wanted]
        # CollectionResponsePropertyNoPaging: {"results": [...]} without paging.
        return json_response({"results": [p.to_json() for p in props]})

    async def _properties_get(self, request: Request) -> Response:
        ot = self._prop_type(request)
        name = request.path_params["propertyName"]
        prop = self.properties.get(ot.name, name, include_archived=_bool_param(request, "archived"))
        if prop is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type {ot.type_id}"
            )
        return json_response(prop.to_json())

    async def _properties_create(self, request: Request) -> Response:
        ot = self._prop_type(request)
        body = await _json_body(request)
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            raise ApiError(400, "VALIDATION_ERROR", f"Missing required fields: {', '.join(missing)}")
        if body["fieldType"] not in FIELD_TYPES:
            raise ApiError(400, "VALIDATION_ERROR", f"Invalid fieldType {body['fieldType']}")
        opts = body.get("options") or []
        now = self.store.clock.now_ms()
        prop = PropertyDef(
            str(body["name"]),
            str(body["label"]),
            str(body["type"]),
            str(body["fieldType"]),
            str(body["groupName"]),
            options=tuple(
                (str(o.get("label", o.get("value"))), str(o.get("value")))
                for o in opts
                if isinstance(o, dict)
            ),
            has_unique_value=bool(body.get("hasUniqueValue", False)),
            description=str(body.get("description", "")),
            display_order=_display_order(body.get("displayOrder", -1)),
            created_at_ms=now,
            updated_at_ms=now,
            extra={"createdUserId": str(self.user_id)},
        )
        try:
            self.properties.add(ot.name, prop)
        except PropertyError as exc:
            raise ApiError(
                409 if exc.conflict else 400, "CONFLICT" if exc.conflict else "VALIDATION_ERROR", str(exc)
            ) from exc
        if prop.has_unique_value:
            self.store.ensure_field_index(ot.name, prop.name)
        return json_response(prop.to_json(), 201)

    async def _properties_archive(self, request: Request) -> Response:
        ot = self._prop_type(request)
        name = request.path_params["propertyName"]
        pdef = self.properties.get(ot.name, name)
        if pdef is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type {ot.type_id}"
            )
        if pdef.hubspot_defined:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Property {name} is a HubSpot-defined property and cannot be archived",
            )
        self.properties.archive(ot.name, name, self.store.clock.now_ms())
        return Response(status_code=204)

    # -- exports --------------------------------------------------------------------------------

    async def _export_start(self, request: Request) -> Response:
        export = parse_export_request(await _json_body(request), self.properties)
        task_id = self.exports.start(export)
        status = f"{str(request.base_url).rstrip('/')}/crm/v3/exports/export/async/tasks/{task_id}/status"
        return json_response({"id": task_id, "links": {"status": status}}, 202)

    async def _export_status(self, request: Request) -> Response:
        return json_response(self.exports.status_body(request.path_params["taskId"], str(request.base_url)))

    async def _export_download(self, request: Request) -> Response:
        """A signed file link (like S3): no bearer token, no API rate limit; 403 once expired."""
        found = self.exports.download(request.path_params["token"], request.path_params["filename"])
        if found is None:
            return Response(_LINK_REFUSED, 403, media_type="application/xml")
        return FileResponse(found.path, media_type=found.media_type, filename=found.name)
