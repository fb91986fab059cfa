"""The app factory: FastAPI + Jinja2 server-rendered pages for customers, ops endpoints, OpenAPI at
``/openapi.json``.

::

    create_app(settings)                        # what ``crmhub web`` serves
    create_app(settings, oauth_configs=[...],   # tests: OAuth clients, an engine, a Temporal client
               engine=engine, temporal=getter)

Its engine, vault, credentials service and connector factory come from :mod:`services.wiring`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.audit import AuditServices
from api.audit import router as audit_router
from api.web import (
    routes_account,
    routes_auth,
    routes_connections,
    routes_instructions,
    routes_ops,
    routes_pages,
    routes_runs,
    routes_subprocessors,
    routes_syncs,
    routes_users,
)
from api.web.context import STATIC_DIR, TEMPLATES_DIR, LazyTemporal, Metrics, TemporalGetter, WebContext
from api.web.guards import BodyTimeout
from api.web.login_limit import LoginLimiter
from api.web.permissions import RoutePermissions
from api.web.render import render
from api.web.security import PasswordHashing, RejectNulBytes, SecurityHeaders
from api.web.session import NotLoggedIn
from connectors.oauth import OAuthProviderConfig
from governance.pseudonym import Pseudonymizer
from schemas.errors import AuthError, ConfigError, CrmhubError, TransientError
from schemas.settings import Settings
from services.wiring import connector_factory, credentials, make_vault
from store.engine import make_engine

__all__ = ["DEFAULT_REDIRECT_URI", "create_app"]

log = logging.getLogger("crmhub.web")

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"

# Answers every audit route can give besides its own (documented here so the spec is complete).
AUDIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the URL contains a NUL byte"},
    401: {"description": "no valid auditor token (Authorization: Bearer crmhub_aud_…)"},
}


def create_app(
    settings: Settings,
    *,
    oauth_configs: Iterable[OAuthProviderConfig] | None = None,
    redirect_uri: str | None = None,
    engine: Engine | None = None,
    temporal: TemporalGetter | None = None,
) -> FastAPI:
    """Build the web app. ``oauth_configs`` default: the configured OAuth clients
    (:mod:`services.oauth_clients`) with ``redirect_uri``, else ``oauth.redirect_uri``, else
    :data:`DEFAULT_REDIRECT_URI`. ``temporal`` default: connect lazily to ``settings.temporal``. Call
    ``app.state.web.close()`` (or let the lifespan do it) to release the engine and HTTP clients."""
    owns_engine = engine is None
    engine = engine or make_engine(settings.effective_database_url)
    vault = make_vault(settings, engine)
    callback = redirect_uri or settings.oauth.redirect_uri or DEFAULT_REDIRECT_URI
    oauth = credentials(settings, engine, vault, redirect_uri=callback, configs=oauth_configs)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    pseudonymizer = Pseudonymizer(vault, shred_check_s=settings.governance.shred_check_s)
    web = settings.web
    ctx = WebContext(
        settings=settings,
        engine=engine,
        vault=vault,
        oauth=oauth,
        connectors=connector_factory(settings, engine, oauth),
        temporal=temporal or LazyTemporal(settings, vault),
        templates=templates,
        pseudonymizer=pseudonymizer,
        login_limiter=LoginLimiter(engine, pseudonymizer, web),
        passwords=PasswordHashing(slots=web.password_hash_slots, wait_s=web.password_hash_wait_s),
        metrics=Metrics(),
        owns_engine=owns_engine,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(
        title="crmhub",
        summary="Connect CRMs, set up syncs under a processing instruction, watch them run.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # the Swagger UI needs inline scripts, which the CSP forbids
        redoc_url=None,
        # no 307 from /oauth/callback/ (or any path) to its slashless twin: a URL is served as sent
        redirect_slashes=False,
        max_body_size=web.max_body_bytes,  # 413 beyond it
    )
    app.state.web = ctx
    # the last added runs first: proxy headers (when trusted) → NUL check → headers → body timeout
    # (innermost: a BaseHTTPMiddleware would wrap its 408 in an ExceptionGroup, which FastAPI's body
    # parsing turns into a 400)
    app.add_middleware(BodyTimeout, timeout_s=web.body_timeout_s)
    app.add_middleware(SecurityHeaders, hsts_max_age=web.hsts_max_age_s)
    app.add_middleware(RejectNulBytes)
    if web.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(web.trusted_proxies))
    _count_responses(app, ctx.metrics)
    _error_pages(app)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (
        routes_ops,
        routes_auth,
        routes_account,
        routes_pages,
        routes_connections,
        routes_syncs,
        routes_runs,
        routes_instructions,
        routes_subprocessors,
        routes_users,
    ):
        app.include_router(module.router)
    # the auditors' read-only API (bearer tokens of their own, see api.audit.router)
    app.state.audit_services = AuditServices.from_settings(
        settings, engine=engine, pseudonymizer=pseudonymizer
    )
    app.include_router(audit_router, prefix="/audit", responses=AUDIT_RESPONSES)
    # what each role may reach, read from the routes' guards: the pages show only those actions
    app.state.permissions = RoutePermissions.of(app.routes)
    return app


def _count_responses(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        metrics.responses.labels(f"{response.status_code // 100}xx").inc()
        return response


_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Not allowed",
    408: "Too slow",
    413: "Too large",
    503: "Unavailable",
}


def _error_pages(app: FastAPI) -> None:
    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _exc: NotLoggedIn) -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each field's submitted value as "input" (a form model's: every
        # field, the password included): say where and what is wrong, never the value
        problems = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else ""
        if request.url.path.startswith(("/api/", "/audit/")):
            return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)
        title = _TITLES.get(exc.status_code, "Error")
        return render(request, "error.html", {"title": title, "message": detail}, status=exc.status_code)

    @app.exception_handler(CrmhubError)
    async def crmhub_error(request: Request, exc: CrmhubError) -> HTMLResponse:
        # crmhub error messages name the problem and the fix, never a token or a record value
        status = (
            503
            if isinstance(exc, TransientError)
            else 400
            if isinstance(exc, ConfigError | AuthError)
            else 502
        )
        log.warning("web request failed: %s %s (%s)", request.method, request.url.path, exc.kind.value)
        return render(
            request, "error.html", {"title": "Cannot do that now", "message": exc.message}, status=status
        )
