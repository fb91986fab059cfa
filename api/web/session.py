"""Login sessions (server-side, cookie ``crmhub_session``) and the CSRF check of every form.

Every request re-reads its session with :func:`store.users.get_live_session`: a session whose user
was disabled or removed, or whose tenant is gone, is no session — the change takes effect at the
next request, on every web process.

``require_session`` raises :class:`NotLoggedIn`, which the app answers with a redirect to ``/login``
(303); ``check_csrf`` answers 403 when a POST lacks the right ``csrf_token`` field.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.responses import Response

from api.web.context import WebContext
from api.web.security import csrf_for_session, new_token, token_hash
from store import users as user_store

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "NotLoggedIn",
    "Session",
    "check_csrf",
    "csrf_token",
    "optional_session",
    "require_session",
    "set_cookie",
    "start_session",
]

SESSION_COOKIE = "crmhub_session"
LOGIN_CSRF_COOKIE = "crmhub_login_csrf"
SESSION_TTL = timedelta(hours=8)


class NotLoggedIn(Exception):
    """The request needs a login session and has none (or an expired one)."""


@dataclass(frozen=True)
class Session:
    token: str
    id_hash: str
    user_id: str
    tenant: str
    oauth_pending: dict[str, str]
    role: str = "admin"  # the user's role, read with the session on every request (store.users.ROLES)

    @property
    def csrf(self) -> str:
        return csrf_for_session(self.token)


def _ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.web
    return ctx


def optional_session(request: Request) -> Session | None:
    """The request's live session, or None."""
    cached: Session | None = getattr(request.state, "session", None)
    if cached is not None:
        return cached
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 128:
        return None
    id_hash = token_hash(token)
    with _ctx(request).engine.connect() as conn:
        row = user_store.get_live_session(conn, id_hash, now=datetime.now(UTC))
    if row is None:
        return None
    session = Session(token, id_hash, row.user_id, row.tenant, row.oauth_pending, row.role)
    request.state.session = session
    return session


def require_session(request: Request) -> Session:
    session = optional_session(request)
    if session is None:
        raise NotLoggedIn
    return session


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Lax, Secure when served over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def start_session(request: Request, response: Response, *, user_id: str, tenant: str) -> None:
    """Create a session for the user and set its cookie on ``response``; the user's oldest sessions
    beyond ``web.sessions_per_user`` end."""
    token = new_token()
    now = datetime.now(UTC)
    ctx = _ctx(request)
    with ctx.engine.begin() as conn:
        user_store.create_session(
            conn,
            id_hash=token_hash(token),
            user_id=user_id,
            tenant=tenant,
            now=now,
            expires_at=now + SESSION_TTL,
            keep_per_user=ctx.settings.web.sessions_per_user,
        )
    set_cookie(request, response, SESSION_COOKIE, token, int(SESSION_TTL.total_seconds()))


def csrf_token(request: Request) -> str:
    """The CSRF token to put in this request's forms: the session's, or (before login) the login
    cookie's — a fresh one is minted and set by the login page when there is none."""
    session = optional_session(request)
    if session is not None:
        return session.csrf
    existing = request.cookies.get(LOGIN_CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 128:
        return existing
    minted: str | None = getattr(request.state, "login_csrf", None)
    if minted is None:
        minted = new_token()
        request.state.login_csrf = minted
    return minted


async def check_csrf(request: Request) -> None:
    """Every POST form carries ``csrf_token``: the session's token, or before login the double-submit
    cookie's. Anything else is 403."""
    form = await request.form()
    sent = form.get("csrf_token")
    session = optional_session(request)
    if session is not None:
        expected: str | None = session.csrf
    else:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise HTTPException(status_code=403, detail="the form is missing its CSRF token or it is stale")
    if any(isinstance(v, str) and "\x00" in v for v in form.values()):
        raise HTTPException(status_code=400, detail="a form field contains a NUL byte")


CsrfChecked = Annotated[None, Depends(check_csrf)]
