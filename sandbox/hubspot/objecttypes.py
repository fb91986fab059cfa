"""Routes of the schemas API and of custom object records (see :mod:`sandbox.hubspot.schemas`).

Custom objects are defined at run time, so their record endpoints cannot be fixed routes: one set
of ``/crm/v3/objects/{objectType}/…`` routes, placed after the standard objects' own, resolves the
path segment (objectTypeId ``2-…`` or fullyQualifiedName ``p{portalId}_{name}``) and hands the request
to the same handlers the standard objects use, so lists, search, batch upsert/read/archive and
properties behave alike. An unknown segment keeps HubSpot's answer, 400 "Unable to infer object
type from: …". Fault-rule (and call-count) names: ``hs.schemas.list|create|get`` and
``hs.custom.<op>`` (``search``, ``batch.upsert``, ``batch.read``, ``batch.archive``, ``list``, …).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sandbox.hubspot.errors import ApiError, json_response
from sandbox.hubspot.schema import ObjectType, object_type
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
        objects = "/crm/v3/objects/{objectType}"
        ops: list[tuple[str, str, str]] = [
            ("search", "POST", f"{objects}/search"),
            *((f"batch.{verb}", "POST", f"{objects}/batch/{verb}") for verb in _BATCH_VERBS),
            ("list", "GET", objects),
            ("create", "POST", objects),
            ("get", "GET", f"{objects}/{{objectId}}"),
            ("update", "PATCH", f"{objects}/{{objectId}}"),
            ("archive", "DELETE", f"{objects}/{{objectId}}"),
        ]
        for op, method, path in ops:
            routes.append(
                Route(
                    path,
                    api(f"hs.custom.{op}", self._records(op), search=op == "search", scope=self._scope(op)),
                    methods=[method],
                )
            )
        return routes

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

    def _scope(self, op: str) -> Callable[[Request], str | None]:
        """Custom object records need ``crm.objects.custom.read`` (reads, search, batch/read) or
        ``.write``; an unknown object type needs none (it is refused with 400 first)."""
        needed = OBJECTS_READ_SCOPE if op in ("search", "batch.read", "list", "get") else OBJECTS_WRITE_SCOPE

        def scope(request: Request) -> str | None:
            key = request.path_params["objectType"]
            known = object_type(key) is None and self.sandbox.schemas.resolve(key) is not None
            return needed if known else None

        return scope

    def _records(self, op: str) -> Callable[[Request], Awaitable[Response]]:
        """The standard objects' handler of ``op`` for the custom object the path names."""
        sb = self.sandbox
        factories: dict[str, Callable[[ObjectType], Callable[[Request], Awaitable[Response]]]] = {
            "search": sb._search,
            "list": sb._list,
            "create": sb._create,
            "get": sb._get,
            "update": sb._update,
            "archive": sb._archive,
            **{f"batch.{verb}": getattr(sb, f"_batch_{verb}") for verb in _BATCH_VERBS},
        }
        factory = factories[op]

        async def handle(request: Request) -> Response:
            return await factory(self._object(request).ot)(request)

        return handle
