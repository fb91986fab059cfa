"""Replays recorded HubSpot answers over real HTTPS (loopback, the sandbox CA) to the real connector.

A corpus file (tests/fixtures/vendor/hubspot/*.json) lists ``exchanges`` in the order the connector
is expected to ask for them: method, path, status, optional headers and body, and optional checks
on the request (``expect_query``: text the raw query string must hold; ``expect_body_contains``).
A request nobody expected, or one failing its check, is answered 599 so the test fails loudly.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.hubspot import HubSpotConfig, HubSpotConnector
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from tests.shared_data import shared_path

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "vendor" / "hubspot"
SHARED = shared_path("vendor-fixtures", "hubspot")


@dataclass
class Replay:
    """The exchanges still to be answered and every request received (method, path, query, body)."""

    exchanges: deque[dict[str, Any]]
    received: list[tuple[str, str, str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def answer(self, request: Request) -> Response:
        body = (await request.body()).decode()
        query = request.url.query
        self.received.append((request.method, request.url.path, query, body))
        if not self.exchanges:
            return self._refuse(f"unexpected {request.method} {request.url.path}")
        nxt = self.exchanges[0]
        if (nxt["method"], nxt["path"]) != (request.method, request.url.path):
            return self._refuse(
                f"expected {nxt['method']} {nxt['path']}, got {request.method} {request.url.path}"
            )
        if nxt.get("expect_query", "") not in query:
            return self._refuse(f"query {query!r} lacks {nxt['expect_query']!r}")
        if nxt.get("expect_body_contains", "") not in body:
            return self._refuse(f"body lacks {nxt['expect_body_contains']!r}")
        self.exchanges.popleft()
        raw = b"" if nxt.get("body") is None else json.dumps(nxt["body"]).encode()
        headers = {"Content-Type": "application/json;charset=utf-8", **nxt.get("headers", {})}
        return Response(raw, status_code=int(nxt["status"]), headers=headers)

    def _refuse(self, why: str) -> Response:
        self.refused.append(why)
        return Response(why.encode(), status_code=599)


class StaticToken:
    def access_token(self) -> str:
        return "replay-token"

    def refresh(self, rejected: str) -> str:
        return "replay-token-2"


def load(name: str) -> list[dict[str, Any]]:
    data = json.loads((CORPUS / name).read_text())
    assert data.get("_source"), f"{name} has no SOURCE note"
    return list(data["exchanges"])


def replay(
    ca: SandboxCA, exchanges: list[dict[str, Any]], **config: Any
) -> Iterator[tuple[Replay, HubSpotConnector]]:
    """Serve ``exchanges`` over HTTPS and yield (the replay, a connector pointed at it)."""
    state = Replay(deque(exchanges))
    app = Starlette(routes=[Route("/{path:path}", state.answer, methods=["GET", "POST", "PATCH", "DELETE"])])
    srv = ServerThread(app, ca, name="hubspot-replay").start()
    options: dict[str, Any] = {"base_url": srv.url, "ca_bundle": ca.ca_path, "search_settle_s": 0.0, **config}
    conn = HubSpotConnector(HubSpotConfig(**options), StaticToken())
    try:
        yield state, conn
    finally:
        conn.close()
        srv.stop()
