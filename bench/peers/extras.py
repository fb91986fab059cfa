"""Answers for the few vendor endpoints a peer calls that the sandbox does not emulate.

Served over HTTPS with the sandbox's CA on a port of its own; the URL-rewrite shim sends only these
paths here (longest prefix wins), everything else to the sandbox. Each answer is either what a
portal with nothing of that kind returns or the sandbox's own data in an older shape, so no peer
sees a record or a property the sandbox does not have:

- ``GET /crm/v3/schemas`` — HubSpot custom-object schemas: ``{"results": []}`` (a portal without
  custom objects). tap-hubspot asks before every sync and gives up after five retries on a 404.
- ``GET /properties/v2/{object}/properties`` — the legacy v2 properties list, i.e. the sandbox's
  ``/crm/v3/properties/{object}`` results as a bare list (airbyte-source-hubspot builds its
  contacts schema from it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["HUBSPOT_PATHS", "app"]

HUBSPOT_PATHS = ("/crm/v3/schemas", "/properties/v2/")


def app(properties: Mapping[str, Sequence[Mapping[str, Any]]]) -> Starlette:
    """``properties`` by HubSpot object name (``contacts``), as the sandbox's v3 API lists them."""

    async def no_custom_objects(request: Request) -> JSONResponse:
        return JSONResponse({"results": []})

    async def v2_properties(request: Request) -> JSONResponse:
        name = request.path_params["object"]
        found = properties.get(name) or properties.get(name + "s")
        if found is None:
            return JSONResponse({"status": "error", "message": f"unknown object {name}"}, status_code=404)
        return JSONResponse(list(found))

    return Starlette(
        routes=[
            Route("/crm/v3/schemas", no_custom_objects, methods=["GET"]),
            Route("/properties/v2/{object}/properties", v2_properties, methods=["GET"]),
        ]
    )
