"""The logged-in user's account: ``/account/password`` changes the password (the current one first,
counted by the login rate limit like a login; hashing within the bounded hash slots) and ends every
other session of the user — whoever else held one is logged out at their next request."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from api.web.forms import PasswordChangeForm
from api.web.guards import address_bucket, client_address
from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.routes_auth import BUSY_RETRY_AFTER_S
from api.web.security import MIN_PASSWORD, PasswordHashBusy
from api.web.session import CsrfChecked
from api.web.tenancy import Scope
from store import users as user_store

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["account"])


def _page(
    request: Request, *, error: str | None = None, changed: bool = False, status: int = 200
) -> HTMLResponse:
    return render(
        request,
        "account_password.html",
        {"error": error, "changed": changed, "min_length": MIN_PASSWORD},
        status=status,
    )


@router.get("/account/password", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def password_page(request: Request, scope: Scope, changed: bool = False) -> HTMLResponse:
    """The password-change form."""
    return _page(request, changed=changed)


@router.post(
    "/account/password",
    response_class=HTMLResponse,
    responses={
        **POST_RESPONSES,
        429: {"description": "too many attempts at the current password"},
        503: {"description": "every password-hash slot is busy (Retry-After)"},
    },
)
def change_password(
    request: Request, scope: Scope, _csrf: CsrfChecked, form: Annotated[PasswordChangeForm, Form()]
) -> Response:
    """Check the current password, set the new one, end the user's other sessions → 303 back here."""
    if form.new_password != form.confirm_password:
        return _page(request, error="The new password and its repetition differ.", status=400)
    if len(form.new_password) < MIN_PASSWORD:
        return _page(request, error=f"The new password needs at least {MIN_PASSWORD} characters.", status=400)
    ctx = scope.ctx
    with ctx.engine.connect() as conn:
        user = user_store.get_user(conn, scope.session.user_id)
    if user is None:  # removed since this request's session check
        return RedirectResponse("/login", status_code=303)
    limiter = ctx.login_limiter
    keys = limiter.keys(scope.tenant, scope.user_email(), address_bucket(client_address(request)))
    taken = limiter.take(keys, now=datetime.now(UTC))
    if not taken.allowed:
        return _page(request, error="Too many wrong attempts. Wait a few minutes and try again.", status=429)
    try:
        if not ctx.passwords.verify(form.current_password, user.password_hash):
            return _page(request, error="The current password is wrong.", status=400)
        new_hash = ctx.passwords.hash(form.new_password)
    except PasswordHashBusy:
        limiter.refund(taken)
        response = _page(request, error="The server is busy. Try again in a moment.", status=503)
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
        return response
    limiter.succeeded(keys)
    with ctx.engine.begin() as conn:
        user_store.set_password_hash(conn, user.id, new_hash)
        ended = user_store.end_sessions(conn, user.id, keep=scope.session.id_hash)
    log.info("web password changed: tenant=%s user=%s other sessions ended=%d", scope.tenant, user.id, ended)
    return RedirectResponse("/account/password?changed=true", status_code=303)
