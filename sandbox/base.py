"""What every emulated CRM has in common: records, OAuth state, faults, a call log, a control API.

A vendor emulator subclasses :class:`VendorSandbox`, implements the abstract record operations
(vendor ids and field semantics), :meth:`render_fault` (the vendor's documented error shapes) and
:meth:`routes` (its API), and gets :meth:`app` — a Starlette app with the vendor routes, the
control API under ``/__sandbox`` and per-request fault injection + call logging — for free.

Control API (loopback only, and every call needs ``Authorization: Bearer <control_token>``)::

    GET    /__sandbox/state                     object counts, call counts, fault plan
    GET    /__sandbox/records/{obj}             every record as JSON lines (?include_deleted=1)
    POST   /__sandbox/records/{obj}             create: {"fields": {...}} → {"id": ...}
    PATCH  /__sandbox/records/{obj}/{id}        modify: {"fields": {...}}
    DELETE /__sandbox/records/{obj}/{id}        soft delete (recycle bin / archive)
    POST   /__sandbox/seed                      {"counts": {"Contact": 1000}, "seed": 1}
    PUT    /__sandbox/faults                    a FaultPlan; DELETE clears it
    GET    /__sandbox/calls                     calls per endpoint; DELETE clears the log
    POST   /__sandbox/schema/{obj}              change the schema (drift): a SchemaChange, e.g.
                                                {"change": "retype", "field": "X__c", "type": "string"}
    POST   /__sandbox/oauth/expire              expire every access token now; with a body
                                                {"endpoint": "sf.query", "at_call": k} at the k-th
                                                call to that endpoint instead (once; add
                                                "revoke_refresh": true to kill the refresh tokens too)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sandbox.faults import CallLog, CallRecord, FaultDecision, FaultInjector, FaultKind, FaultPlan
from sandbox.oauth import OAuthServer
from sandbox.records import RecordStore

__all__ = ["DroppedConnection", "Handler", "SchemaChange", "VendorSandbox", "endpoint", "schema_control"]

Handler = Callable[[Request], Awaitable[Response]]


def endpoint(name: str) -> Callable[[Handler], Handler]:
    """Name a route handler's endpoint (used for fault rules and call counts), e.g. ``"sf.query"``."""

    def mark(fn: Handler) -> Handler:
        fn.__sandbox_endpoint__ = name  # type: ignore[attr-defined]
        return fn

    return mark


class SchemaChange(BaseModel):
    """A schema change an admin makes in the vendor's setup UI, applied as that vendor does it:
    ``add`` a field/property (``type``, optional ``label``), ``drop`` (delete / archive) one,
    ``retype`` one to ``type`` (stored values converted as the vendor converts them), ``rename`` one
    to ``to`` (Salesforce keeps the values under the new API name; HubSpot cannot rename an internal
    name, so it is a new property plus the old one archived)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    change: Literal["add", "drop", "retype", "rename"]
    field: str = Field(min_length=1, max_length=100)
    type: str | None = None
    to: str | None = Field(None, min_length=1, max_length=100)
    label: str | None = None


SchemaControl = Callable[[Any, str, SchemaChange], dict[str, Any]]
_SCHEMA_CONTROLS: dict[str, SchemaControl] = {}


def schema_control(vendor: str) -> Callable[[SchemaControl], SchemaControl]:
    """Register the function that applies a :class:`SchemaChange` to ``vendor``'s sandbox (its schema
    module registers it, so the control API needs no vendor import)."""

    def register(fn: SchemaControl) -> SchemaControl:
        _SCHEMA_CONTROLS[vendor] = fn
        return fn

    return register


class DroppedConnection(Response):
    """Announces a body, sends part of it, then fails: the client sees the connection cut mid-response."""

    def __init__(self, announced: int = 4096) -> None:
        super().__init__(status_code=200)
        self.announced = announced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(self.announced).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"records": [', "more_body": True})
        raise ConnectionAbortedError("sandbox fault: connection dropped")


class VendorSandbox(ABC):
    """One emulated CRM org/portal. Thread-safe where the server thread and tests meet."""

    name: str = "vendor"

    def __init__(self, *, store: RecordStore | None = None, oauth: OAuthServer) -> None:
        self.store = store or RecordStore()
        self.oauth = oauth
        self.faults = FaultInjector()
        self.calls = CallLog()
        self.control_token = secrets.token_urlsafe(24)
        self.base_url = ""  # set by the runtime once the server is bound

    # -- vendor specifics -----------------------------------------------------------------------

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The vendor API's routes; handlers decorated with :func:`endpoint`."""

    @abstractmethod
    def render_fault(self, decision: FaultDecision, endpoint_name: str) -> Response:
        """The vendor's documented response for an injected 429/5xx/malformed fault."""

    @abstractmethod
    def create_record(self, obj: str, fields: Mapping[str, Any]) -> str:
        """Create a record as the vendor would (ids, system fields); returns its id."""

    @abstractmethod
    def update_record(self, obj: str, id: str, fields: Mapping[str, Any]) -> bool:
        """Modify a live record (bumping its modification stamp); False if absent."""

    @abstractmethod
    def delete_record(self, obj: str, id: str) -> bool:
        """Soft-delete (Salesforce recycle bin / HubSpot archive); False if absent."""

    @abstractmethod
    def seed(self, counts: Mapping[str, int], *, seed: int = 1) -> dict[str, int]:
        """Add deterministic fake records, e.g. ``{"Contact": 10_000}``; returns counts added."""

    def change_schema(self, obj: str, change: SchemaChange) -> dict[str, Any]:
        """Apply a schema change (drift) the way this vendor does; returns what changed. ValueError
        / KeyError when the vendor would refuse it (unknown object or field, taken name)."""
        control = _SCHEMA_CONTROLS.get(self.name)
        if control is None:
            raise ValueError(f"the {self.name} sandbox has no schema control")
        return control(self, obj, change)

    def live_records(self, obj: str) -> list[dict[str, Any]]:
        """Every live record of ``obj`` (whole-state checks in tests)."""
        return [{"id": r.id, **r.data} for r in self.store.dump(obj) if not r.deleted]

    # -- the app --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [self._wrap(r) for r in self.routes()] + self._control_routes()
        return Starlette(routes=routes)

    def _wrap(self, route: BaseRoute) -> BaseRoute:
        if not isinstance(route, Route):
            return route
        handler = route.endpoint
        name = getattr(handler, "__sandbox_endpoint__", None)
        if name is None:
            return route
        sandbox = self

        async def faulted(request: Request) -> Response:
            arrived = time.monotonic()
            decision = sandbox.faults.decide(name)
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            response = await sandbox._faulted(decision, name, request)
            if response is None:
                sandbox.oauth.note_call(name)  # an armed "expire at the k-th call" trigger fires here
                response = await handler(request)
                if decision.kind is FaultKind.LOST and response.status_code < 400:
                    response = DroppedConnection()  # carried out; the client never hears so
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            sandbox.calls.add(CallRecord(arrived, name, response.status_code, _token_tag(request), target))
            return response

        return Route(route.path, faulted, methods=list(route.methods or ()), name=route.name)

    async def _faulted(self, decision: FaultDecision, name: str, request: Request) -> Response | None:
        if decision.kind is None or decision.kind is FaultKind.LOST:
            return None  # answered by the handler (a lost answer is cut after it)
        if decision.kind is FaultKind.TIMEOUT:
            await asyncio.sleep(decision.timeout_s)
            return DroppedConnection()
        if decision.kind is FaultKind.DROP:
            return DroppedConnection()
        return self.render_fault(decision, name)

    # -- control API ----------------------------------------------------------------------------

    def _control_routes(self) -> list[BaseRoute]:
        return [
            Route("/__sandbox/state", self._c_state, methods=["GET"]),
            Route("/__sandbox/records/{obj}", self._c_records, methods=["GET", "POST"]),
            Route("/__sandbox/records/{obj}/{id}", self._c_record, methods=["PATCH", "DELETE"]),
            Route("/__sandbox/seed", self._c_seed, methods=["POST"]),
            Route("/__sandbox/faults", self._c_faults, methods=["PUT", "DELETE"]),
            Route("/__sandbox/calls", self._c_calls, methods=["GET", "DELETE"]),
            Route("/__sandbox/schema/{obj}", self._c_schema, methods=["POST"]),
            Route("/__sandbox/oauth/expire", self._c_expire, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        got = request.headers.get("authorization", "")
        return secrets.compare_digest(got.encode(), f"Bearer {self.control_token}".encode())

    async def _guard(self, request: Request) -> Response | None:
        if not self._authorized(request):
            return JSONResponse({"error": "control API needs the sandbox control token"}, status_code=401)
        return None

    async def _c_state(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        return JSONResponse(
            {
                "vendor": self.name,
                "objects": self.store.objects(),
                "calls": self.calls.counts(),
                "faults": self.faults.plan.model_dump(),
            }
        )

    async def _c_records(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        obj = request.path_params["obj"]
        if request.method == "POST":
            body = await request.json()
            return JSONResponse({"id": self.create_record(obj, body.get("fields", {}))}, status_code=201)
        include_deleted = request.query_params.get("include_deleted") in ("1", "true")

        async def lines() -> AsyncIterator[bytes]:
            for row in self.store.dump(obj, include_deleted=include_deleted):
                item = {"id": row.id, "deleted": row.deleted, "modstamp": row.modstamp, "fields": row.data}
                yield json.dumps(item, ensure_ascii=False).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _c_record(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        obj, id_ = request.path_params["obj"], request.path_params["id"]
        if request.method == "PATCH":
            ok = self.update_record(obj, id_, (await request.json()).get("fields", {}))
        else:
            ok = self.delete_record(obj, id_)
        return Response(status_code=204 if ok else 404)

    async def _c_seed(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        body = await request.json()
        added = await asyncio.to_thread(self.seed, body.get("counts", {}), seed=int(body.get("seed", 1)))
        return JSONResponse({"added": added})

    async def _c_faults(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        if request.method == "DELETE":
            self.faults.clear()
            self.oauth.expire_after_calls = None
        else:
            plan = FaultPlan.model_validate(await request.json())
            self.faults.set_plan(plan)
            self.oauth.expire_after_calls = plan.token_expiry_after_calls
        return JSONResponse(self.faults.plan.model_dump())

    async def _c_schema(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        try:
            change = SchemaChange.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": f"invalid schema change: {exc.error_count()} error(s)"}, 400)
        try:
            done = self.change_schema(request.path_params["obj"], change)
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(done)

    async def _c_calls(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        if request.method == "DELETE":
            self.calls.clear()
        return JSONResponse(self.calls.counts())

    async def _c_expire(self, request: Request) -> Response:
        if (denied := await self._guard(request)) is not None:
            return denied
        body = await request.body()
        if not body:
            self.oauth.expire_all_access_tokens()
            return Response(status_code=204)
        try:
            arm = _ExpireAt.model_validate_json(body)
        except ValidationError as exc:
            return JSONResponse({"error": f"invalid expiry trigger: {exc.error_count()} error(s)"}, 400)
        self.oauth.expire_at_call(arm.endpoint, arm.at_call, revoke_refresh=arm.revoke_refresh)
        return Response(status_code=204)


class _ExpireAt(BaseModel):
    """Body of ``POST /__sandbox/oauth/expire``: arm the trigger instead of expiring now."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    at_call: int = Field(ge=1)
    revoke_refresh: bool = False


def _token_tag(request: Request) -> str | None:
    """A short hash of the bearer token (never the token) so calls can be grouped per token."""
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith(("bearer ", "oauth ")):
        return None
    return hashlib.sha256(auth.split(" ", 1)[1].encode()).hexdigest()[:12]
