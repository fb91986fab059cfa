"""HTTP helpers shared by the Salesforce emulator's handlers: error objects and JSON responses.

REST error bodies are a JSON array of ``{"message", "errorCode"[, "fields"]}`` objects:
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.jsonbody import BadJson, parse_body

__all__ = ["JSON_TYPE", "ApiError", "bearer_token", "json_response", "read_json"]

JSON_TYPE = "application/json;charset=UTF-8"


class ApiError(Exception):
    """A REST error: HTTP ``status`` and one Salesforce error object (``[{message, errorCode}]``)."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """JSON the way Salesforce sends it (``application/json;charset=UTF-8``, UTF-8, compact)."""
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(data, status_code=status, media_type=JSON_TYPE, headers=dict(headers or {}))


def bearer_token(request: Request) -> str | None:
    """The access token of ``Authorization: Bearer <t>`` (or the older ``OAuth <t>``)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    return None


async def read_json(request: Request) -> Any:
    """The request's JSON body; malformed JSON (see :mod:`sandbox.jsonbody`: NaN/Infinity, too deep,
    unpaired surrogates, not UTF-8 …) is 400 JSON_PARSER_ERROR."""
    try:
        return parse_body(await request.body())
    except BadJson as exc:
        raise ApiError(
            400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc.reason}"
        ) from None
