"""Render a page: the template plus what every page needs (CSRF token, who is logged in, and what
their role may do: ``can(method, url)`` and ``only(method, url)`` from :mod:`api.web.permissions`,
which reads the routes' own role guards)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from api.web.context import WebContext
from api.web.permissions import RoutePermissions
from api.web.session import LOGIN_CSRF_COOKIE, csrf_token, optional_session, set_cookie

__all__ = ["HTML", "PAGE_RESPONSES", "POST_RESPONSES", "render"]

HTML = HTMLResponse

_html = {"text/html": {"schema": {"type": "string"}}}
PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _html, "description": "the page"},
    303: {"description": "not logged in: redirect to /login"},
    400: {"description": "the URL contains a NUL byte"},
    404: {"content": _html, "description": "no such object in your tenant"},
}
POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "done: redirect to the next page (or to /login when not logged in)"},
    400: {"content": _html, "description": "the form has a problem (the page says which)"},
    403: {"content": _html, "description": "missing or stale CSRF token"},
    404: {"content": _html, "description": "no such object in your tenant"},
    503: {"content": _html, "description": "Temporal is not reachable"},
}


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> HTMLResponse:
    ctx: WebContext = request.app.state.web
    session = optional_session(request)
    role = session.role if session else None
    permissions: RoutePermissions = request.app.state.permissions

    def can(method: str, url: str) -> bool:
        """Whether the server accepts ``method url`` from this user's role (a template shows the
        button, form or link only then)."""
        return permissions.allows(role, method, url)

    values: dict[str, Any] = {
        "request": request,
        "csrf_token": csrf_token(request),
        "tenant": session.tenant if session else None,
        "logged_in": session is not None,
        "role": role,
        "can": can,
        "only": permissions.who,
    }
    values.update(context or {})
    response = ctx.templates.TemplateResponse(request, template, values, status_code=status)
    minted = getattr(request.state, "login_csrf", None)
    if session is None and minted is not None:
        set_cookie(request, response, LOGIN_CSRF_COOKIE, minted, 3600)
    return response
