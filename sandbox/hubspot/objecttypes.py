"""Routes of the schemas API and of custom object records (see :mod:`sandbox.hubspot.schemas`).

Custom objects are defined at run time, so their record endpoints cannot be fixed routes: one set
of ``/crm/v3/objects/{objectType}/…`` routes, placed after the standard objects' own, resolves the
path segment (objectTypeId ``2-…`` or fullyQualifiedName ``p{portalId}_{name}``) and hands the request
to the same handlers the standard objects use, so lists, search, batch upsert/read/archive and
properties behave alike. An unknown segment keeps HubSpot's answer, 400 "Unable to infer object
type from: …". Fault-rule names: ``hs.schemas.list|create|get``, ``hs.custom.objects`` and
``hs.custom.search``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.hubspot.errors import ApiError, json_response
from sandbox.hubspot.schema import object_type
from sandbox.hubspot.schemas import (
    OBJECTS_READ_SCOPE,
    OBJECTS_WRITE_SCOPE,
    SCHEMAS_READ_SCOPE,
    SCHEMAS_WRITE_SCOPE,
    CustomObject,
)
from sandbox.jsonbody import BadJson, parse_body

if TYPE_CHECKING:
    from sandbox.hubspot.app import HubSpotSandbox

__all__ = ["CustomRoutes"]

_BATCH_VERBS = ("read", "create", "update", "upsert", "archive")


class CustomRoutes:
    """The schemas API and the record routes of the sandbox portal's custom objects."""

    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sandbox = sandbox

    def define(self, body: Any) -> dict[str, Any]:
        """Create a custom object schema (the Python handle and ``POST /crm/v3/schemas``)."""
        sb = self.sandbox
        obj = sb.schemas.create(body if isinstance(body, dict) else {}, sb.store.clock.now_ms())
        for name in sb.properties.unique_properties(obj.ot.name):
            sb.store.ensure_field_index(obj.ot.name, name)
        return sb.schemas.to_json(obj)

    def routes(self) -> list[BaseRoute]:
        api = self.sandbox._api
        objects = "/crm/v3/objects/{objectType}"
        routes: list[BaseRoute] = []
        # The guide names /crm/v3/schemas, the API reference (and hubspot-api-client)
        # /crm-object-schemas/v3/schemas: both are served.
        for base in ("/crm/v3/schemas", "/crm-object-schemas/v3/schemas"):
            routes += [
                Route(base, api("hs.schemas.list", self._list, scope=SCHEMAS_READ_SCOPE), methods=["GET"]),
                Route(
                    base, api("hs.schemas.create", self._create, scope=SCHEMAS_WRITE_SCOPE), methods=["POST"]
                ),
                Route(
                    f"{base}/{{objectType}}",
                    api("hs.schemas.get", self._get, scope=SCHEMAS_READ_SCOPE),
                    methods=["GET"],
                ),
            ]
        return [
            *routes,
            Route(
                f"{objects}/search",
                api("hs.custom.search", self._records, search=True, scope=self._scope),
                methods=["POST"],
            ),
            Route(
                objects, api("hs.custom.objects", self._records, scope=self._scope), methods=["GET", "POST"]
            ),
            Route(
                f"{objects}/{{rest:path}}",
                api("hs.custom.objects", self._records, scope=self._scope),
                methods=["GET", "POST", "PATCH", "DELETE"],
            ),
        ]

    # -- schemas ---------------------------------------------------------------------------------

    async def _list(self, request: Request) -> Response:
        schemas = self.sandbox.schemas
        return json_response({"results": [schemas.to_json(o) for o in schemas.all()]})

    async def _create(self, request: Request) -> Response:
        try:
            body = parse_body(await request.body(), empty={})
        except BadJson as exc:
            raise ApiError(400, "VALIDATION_ERROR", f"Invalid input JSON on line 1: {exc.reason}") from None
        return json_response(self.define(body), status=201)

    async def _get(self, request: Request) -> Response:
        key = request.path_params["objectType"]
        obj = self.sandbox.schemas.resolve(key)
        if obj is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find object type {key}")
        return json_response(self.sandbox.schemas.to_json(obj))

    # -- records ---------------------------------------------------------------------------------

    def _object(self, request: Request) -> CustomObject:
        key = request.path_params["objectType"]
        obj = None if object_type(key) is not None else self.sandbox.schemas.resolve(key)
        if obj is None:
            raise ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {key}")
        return obj

    def _scope(self, request: Request) -> str | None:
        """Custom object records need ``crm.objects.custom.read`` (reads, search, batch/read) or
        ``.write``; an unknown object type needs none (it is refused with 400 first)."""
        key = request.path_params["objectType"]
        if object_type(key) is not None or self.sandbox.schemas.resolve(key) is None:
            return None
        rest = str(request.path_params.get("rest", ""))
        reads = request.method == "GET" or rest in ("search", "batch/read")
        return OBJECTS_READ_SCOPE if reads else OBJECTS_WRITE_SCOPE

    async def _records(self, request: Request) -> Response:
        ot = self._object(request).ot
        sb = self.sandbox
        rest = str(request.path_params.get("rest", "search" if request.url.path.endswith("/search") else ""))
        method = request.method
        if rest == "":
            handler = sb._list(ot) if method == "GET" else sb._create(ot)
        elif rest == "search" and method == "POST":
            handler = sb._search(ot)
        elif rest.startswith("batch/") and rest[6:] in _BATCH_VERBS and method == "POST":
            handler = getattr(sb, f"_batch_{rest[6:]}")(ot)
        elif "/" not in rest and method in ("GET", "PATCH", "DELETE"):
            request.scope["path_params"] = {**request.path_params, "objectId": rest}
            handler = {"GET": sb._get, "PATCH": sb._update, "DELETE": sb._archive}[method](ot)
        else:
            raise ApiError(404, "NOT_FOUND", f"No route for {method} {request.url.path}")
        response: Response = await handler(request)
        return response
