"""A loopback HTTPS server that answers recorded Salesforce responses, for replaying vendor-shaped
bodies through the real connector (simple-salesforce, pinned CA) — no emulation, just the bytes.

Routes are ``(method, path prefix)`` → replies served in order (the last one repeats); the longest
matching prefix wins; every request is logged (method, path, query) for call-count assertions.
Bodies come from ``tests/fixtures/vendor/salesforce`` envelopes (``SOURCE``, ``status``,
``headers``, ``content_type``, ``body``) or from ``/work/shared/vendor-fixtures/salesforce`` files.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.salesforce import SalesforceConfig, SalesforceConnector
from sandbox.server import ServerThread
from sandbox.tls import SandboxCA
from tests.shared_data import shared_path

OURS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "vendor" / "salesforce"
SHARED = shared_path("vendor-fixtures", "salesforce")
V = "/services/data/v59.0"
JSON = "application/json;charset=UTF-8"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def ours(name: str, **fill: str) -> Reply:
    """An envelope of ``tests/fixtures/vendor/salesforce`` (``{placeholders}`` in text bodies filled)."""
    env = json.loads((OURS / name).read_text())
    body = env["body"]
    text = body if isinstance(body, str) else json.dumps(body)
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return Reply(env["status"], text.encode(), env["content_type"], dict(env["headers"]))


def shared(name: str, status: int = 200, content_type: str = JSON, **headers: str) -> Reply:
    """A file of the shared ``vendor-fixtures/salesforce`` as recorded (a missing one fails)."""
    path = SHARED / name
    return Reply(status, path.read_bytes(), content_type, headers)


class Replay:
    """The recorded org: add routes, then point a connector at :attr:`url`."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.log: list[tuple[str, str, str]] = []
        self.url = ""

    def add(self, method: str, prefix: str, *replies: Reply) -> Replay:
        self.routes[(method, prefix)] = list(replies)
        return self

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and p.startswith(prefix))

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        self.log.append((request.method, path, request.url.query))
        matches = [k for k in self.routes if k[0] == request.method and path.startswith(k[1])]
        if not matches:
            body = json.dumps([{"message": "not recorded", "errorCode": "NOT_FOUND"}]).encode()
            return Response(body, 404, media_type=JSON)
        queue = self.routes[max(matches, key=lambda k: len(k[1]))]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return Response(
            reply.body or None, reply.status, headers=reply.headers, media_type=reply.content_type
        )

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
        return Starlette(routes=[Route("/{path:path}", self._answer, methods=methods)])


class StaticTokens:
    """A TokenSource with one token; refresh hands out a second one (counted)."""

    def __init__(self) -> None:
        self.refreshes = 0

    def access_token(self) -> str:
        return "00D5d000000XyZa!AQ4AQReplayToken"

    def refresh(self, rejected: str) -> str:
        self.refreshes += 1
        return "00D5d000000XyZa!AQ4AQReplayToken2"


@dataclass
class Served:
    replay: Replay
    ca: SandboxCA
    _connectors: list[SalesforceConnector] = field(default_factory=list)

    def connector(self, tokens: StaticTokens | None = None, **overrides: Any) -> SalesforceConnector:
        config = SalesforceConfig(
            **{
                "instance_url": self.replay.url,
                "ca_bundle": self.ca.ca_path,
                "bulk_threshold": 1_000_000,
                "request_attempts": 1,
                **overrides,
            }
        )
        conn = SalesforceConnector(config, tokens or StaticTokens(), sleep=lambda _s: None)
        self._connectors.append(conn)
        return conn


@pytest.fixture
def served(sf_ca: SandboxCA) -> Iterator[Served]:
    """The recorded org on loopback, trusted through the harness's sandbox CA (``sf_ca``)."""
    replay = Replay()
    srv = ServerThread(replay.app(), sf_ca, name="salesforce-replay").start()
    replay.url = srv.url
    out = Served(replay, sf_ca)
    try:
        yield out
    finally:
        for conn in out._connectors:
            conn.close()
        srv.stop()
