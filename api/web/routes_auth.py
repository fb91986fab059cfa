"""Login and logout. Logins are rate limited: 5 failures in 5 minutes for one tenant + email + client
IP answer 429 until the window has passed (checked before the password, so guessing stops)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from api.web.context import WebContext
from api.web.render import POST_RESPONSES, render
from api.web.security import DUMMY_HASH, login_key, verify_password
from api.web.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE, CsrfChecked, optional_session, start_session
from store import tenants as tenant_store
from store import users as user_store

__all__ = ["MAX_FAILURES", "WINDOW", "router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["auth"])

MAX_FAILURES = 5
WINDOW = timedelta(minutes=5)


@router.get("/login", response_class=HTMLResponse, responses={200: {"description": "the login form"}})
def login_page(request: Request) -> HTMLResponse:
    """The login form (organisation id, email, password)."""
    return render(request, "login.html", {"error": None, "organisation": ""})


@router.post(
    "/login",
    response_class=HTMLResponse,
    responses={
        **POST_RESPONSES,
        401: {"description": "wrong credentials"},
        429: {"description": "too many failures"},
    },
)
def login(
    request: Request,
    _csrf: CsrfChecked,
    organisation: Annotated[str, Form(max_length=128)],
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Check the credentials and start a session (cookie HttpOnly, SameSite=Lax, Secure on https)."""
    ctx: WebContext = request.app.state.web
    tenant = organisation.strip().lower()
    ip = request.client.host if request.client else "-"
    key = login_key(tenant, email, ip)
    now = datetime.now(UTC)
    with ctx.engine.begin() as conn:
        failures = user_store.count_login_failures(conn, key, since=now - WINDOW)
    if failures >= MAX_FAILURES:
        ctx.metrics.logins.labels("rate_limited").inc()
        log.warning("web login rate limited")
        return render(
            request,
            "login.html",
            {"error": "Too many failed attempts. Wait a few minutes and try again.", "organisation": tenant},
            status=429,
        )
    user = None
    with ctx.engine.connect() as conn:
        known_tenant = bool(tenant) and tenant_store.get_tenant(conn, tenant) is not None
    if known_tenant:
        email_hash = ctx.pseudonymizer.keyed_hash(tenant, email.strip().lower())
        with ctx.engine.connect() as conn:
            user = user_store.find_user(conn, tenant, email_hash)
    ok = verify_password(password, user.password_hash if user else DUMMY_HASH) and user is not None
    if not ok or user is None:
        with ctx.engine.begin() as conn:
            user_store.record_login_failure(conn, key, now=now)
        ctx.metrics.logins.labels("failed").inc()
        log.info("web login failed: tenant=%s", tenant if known_tenant else "<unknown>")
        return render(
            request,
            "login.html",
            {"error": "Organisation, email or password is wrong.", "organisation": tenant},
            status=401,
        )
    with ctx.engine.begin() as conn:
        user_store.clear_login_failures(conn, key)
        user_store.set_last_login(conn, user.id, now=now)
    response = RedirectResponse("/", status_code=303)
    start_session(request, response, user_id=user.id, tenant=user.tenant)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    ctx.metrics.logins.labels("ok").inc()
    log.info("web login: tenant=%s user=%s", user.tenant, user.id)
    return response


@router.post("/logout", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES)
def logout(request: Request, _csrf: CsrfChecked) -> RedirectResponse:
    """End the session (deleted server-side) and clear the cookie."""
    ctx: WebContext = request.app.state.web
    session = optional_session(request)
    if session is not None:
        with ctx.engine.begin() as conn:
            user_store.delete_session(conn, session.id_hash)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
