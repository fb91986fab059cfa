"""Login and logout. Logins are rate limited (:mod:`api.web.login_limit`): by default 5 attempts in 5
minutes at one account from one client address, 20 at one account, 50 from one address — beyond
them 429 until the window has passed, counted atomically before the password is checked. The
password check runs in a bounded number of hash slots (503 with ``Retry-After`` when they stay
full); an unknown organisation or email is checked against a dummy hash, so the answer and its time
do not tell which accounts exist, nor does a disabled one's. An offboarded (crypto-shredded)
organisation is one whose keys are gone: its logins are wrong credentials (401) like an unknown one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from api.web.context import WebContext
from api.web.guards import address_bucket, client_address
from api.web.render import POST_RESPONSES, render
from api.web.security import DUMMY_HASH, PasswordHashBusy
from api.web.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE, CsrfChecked, optional_session, start_session
from governance.vault import TenantKeysDestroyed
from store import tenants as tenant_store
from store import users as user_store

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["auth"])

BUSY_RETRY_AFTER_S = 2
"""Seconds a 503 for busy password-hash slots asks the client to wait."""


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
        429: {"description": "too many attempts"},
        503: {"description": "every password-hash slot is busy (Retry-After)"},
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
    email = email.strip().lower()
    keys = ctx.login_limiter.keys(tenant, email, address_bucket(client_address(request)))
    now = datetime.now(UTC)
    taken = ctx.login_limiter.take(keys, now=now)
    if not taken.allowed:
        ctx.metrics.logins.labels("rate_limited").inc()
        log.warning("web login rate limited")
        return _login_error(
            request, tenant, "Too many failed attempts. Wait a few minutes and try again.", 429
        )
    user = None
    with ctx.engine.connect() as conn:
        known_tenant = bool(tenant) and tenant_store.get_tenant(conn, tenant) is not None
    if known_tenant:
        try:
            email_hash: str | None = ctx.pseudonymizer.keyed_hash(tenant, email)
        except TenantKeysDestroyed:  # offboarded: no user can be found (and none is left)
            email_hash = None
        if email_hash is not None:
            with ctx.engine.connect() as conn:
                user = user_store.find_user(conn, tenant, email_hash)
    try:
        matches = ctx.passwords.verify(password, user.password_hash if user else DUMMY_HASH)
    except PasswordHashBusy:
        ctx.login_limiter.refund(taken)
        ctx.metrics.logins.labels("busy").inc()
        log.warning("web login refused: every password-hash slot is busy")
        busy = _login_error(request, tenant, "The server is busy. Try again in a moment.", 503)
        busy.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
        return busy
    if not matches or user is None or not user.enabled:
        ctx.metrics.logins.labels("failed").inc()
        log.info("web login failed: tenant=%s", tenant if known_tenant else "<unknown>")
        return _login_error(request, tenant, "Organisation, email or password is wrong.", 401)
    ctx.login_limiter.succeeded(keys)
    with ctx.engine.begin() as conn:
        user_store.set_last_login(conn, user.id, now=now)
    response = RedirectResponse("/", status_code=303)
    start_session(request, response, user_id=user.id, tenant=user.tenant)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    ctx.metrics.logins.labels("ok").inc()
    log.info("web login: tenant=%s user=%s", user.tenant, user.id)
    return response


def _login_error(request: Request, tenant: str, message: str, status: int) -> HTMLResponse:
    return render(request, "login.html", {"error": message, "organisation": tenant}, status=status)


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
