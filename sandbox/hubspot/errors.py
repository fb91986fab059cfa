"""HubSpot's error bodies, in the shapes the vendor fixtures show.

The common envelope (spec ``Error``: required ``category``, ``correlationId``, ``message``; live
bodies also carry ``"status": "error"``) is documented at
https://developers.hubspot.com/docs/api-reference/error-handling and shown by
``/work/shared/vendor-fixtures/hubspot/error.example.hubspot_spec.json`` and
``error_401_expired_authentication.captured.json``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

__all__ = [
    "CRM_ERROR_LINKS",
    "ApiError",
    "PropertyProblem",
    "error_body",
    "error_response",
    "invalid_properties",
    "json_response",
    "rate_limit_response",
]

# The knowledge-base link HubSpot attaches to CRM validation errors (error.example.hubspot_spec.json).
CRM_ERROR_LINKS = {"knowledge-base": "https://www.hubspot.com/products/service/knowledge-base"}

# "Authentication credentials not found" is HubSpot's text for a call with no (usable) credentials.
MISSING_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(
    category: str,
    message: str,
    *,
    context: Mapping[str, Sequence[str]] | None = None,
    sub_category: str | None = None,
    links: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``{"status": "error", "message", "correlationId", "category", ...}`` with optional extras."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
    }
    body["category"] = category
    if context:
        body["context"] = {k: list(v) for k, v in context.items()}
    if sub_category:
        body["subCategory"] = sub_category
    if links:
        body["links"] = dict(links)
    if errors:
        body["errors"] = [dict(e) for e in errors]
    return body


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Compact UTF-8 JSON (what HubSpot sends), without Starlette's default re-encoding overhead."""
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(raw, status_code=status, media_type="application/json;charset=utf-8", headers=headers)


def error_response(
    status: int,
    category: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    return json_response(error_body(category, message, **extra), status, headers)


class ApiError(Exception):
    """Raised inside handlers; rendered as HubSpot's error JSON with ``status``."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def response(self) -> Response:
        if self.status == 404 and self.category == "":
            # GET of an unknown record id: HubSpot answers 404 with an empty body.
            return Response(status_code=404)
        return error_response(self.status, self.category, self.message, **self.extra)


class PropertyProblem(dict[str, Any]):
    """One entry of HubSpot's "Property values were not valid: [...]" list.

    Entries seen in live bodies: ``{"isValid": false, "message": "Email address x is invalid",
    "error": "INVALID_EMAIL", "name": "email"}`` (issues Atlas-Authority/marketing-automation#174,
    HubSpot/hubspot-api-python#51 neighbours) and, for unknown properties, the same plus
    ``localizedErrorMessage`` and ``portalId``.
    """

    @classmethod
    def make(cls, name: str, error: str, message: str, portal_id: int | None = None) -> PropertyProblem:
        p = cls(isValid=False, message=message, error=error, name=name)
        if portal_id is not None:
            p["localizedErrorMessage"] = message
            p["portalId"] = portal_id
        return p


def invalid_properties(problems: Sequence[PropertyProblem]) -> ApiError:
    """400 VALIDATION_ERROR "Property values were not valid: [<json list>]" (the live text)."""
    listing = json.dumps(list(problems), separators=(",", ":"), ensure_ascii=False)
    return ApiError(400, "VALIDATION_ERROR", f"Property values were not valid: {listing}")


def rate_limit_response(
    policy: str,
    message: str,
    retry_after_s: float,
    headers: Mapping[str, str] | None = None,
    *,
    send_retry_after: bool = True,
) -> Response:
    """HubSpot's 429 body: ``status``, ``message`` naming the limit, ``errorType: RATE_LIMIT``,
    ``correlationId``, ``policyName``, ``requestId`` — the format quoted from
    https://developers.hubspot.com/docs/api/usage-details (community copy:
    https://community.hubspot.com/rss/message?board.id=integrations&message.id=47812).
    ``Retry-After`` (whole seconds) is our addition, sent only when ``send_retry_after``: HubSpot
    documents it for 477 only, not for 429 (see :mod:`sandbox.hubspot.quirks`).
    """
    body = {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "requestId": uuid.uuid4().hex,
    }
    out = dict(headers or {})
    if send_retry_after:
        out["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return json_response(body, 429, out)
