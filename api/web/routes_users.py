"""The tenant's web users, for its admins (issue 18 item 5): ``/users`` lists them (email, role, last
login, live sessions); ``POST /users/{id}/logout`` ends a user's sessions (the admin's own: every
other one) and ``POST /users/{id}/remove`` deletes another user with its sessions. Both take effect
at the user's next request, like ``crmhub web user logout|remove``, and each is a human-access
ledger event (``user_logout``, ``user_remove``) with the admin as actor. An admin cannot remove
themself (another admin, or the CLI, can), so a tenant always keeps the admin who acted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.session import CsrfChecked
from api.web.tenancy import AdminScope, TenantScope
from store import users as user_store
from store.users import UserRow

__all__ = ["UserView", "router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["users"])


@dataclass(frozen=True)
class UserView:
    """One user as the page lists them (the email opened from the vault for the admin)."""

    row: UserRow
    email: str
    sessions: int
    is_me: bool


def _user(scope: TenantScope, user_id: str) -> UserRow:
    with scope.ctx.engine.connect() as conn:
        user = user_store.get_user(conn, user_id)
    if user is None or user.tenant != scope.tenant:  # another tenant's user is an unknown one
        raise HTTPException(status_code=404, detail="no such user")
    return user


@router.get("/users", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def users_page(request: Request, scope: AdminScope) -> HTMLResponse:
    """The tenant's users with their roles and live sessions, and the End sessions / Remove buttons."""
    now = datetime.now(UTC)
    with scope.ctx.engine.connect() as conn:
        rows = user_store.list_users(conn, scope.tenant)
        counts = {u.id: user_store.count_sessions(conn, u.id, now=now) for u in rows}
    views = [
        UserView(
            u,
            scope.ctx.vault.open(
                scope.tenant, u.email_sealed, dataset="web-user-email", object_id=u.id, purpose="web-login"
            ).decode("utf-8"),
            counts[u.id],
            u.id == scope.session.user_id,
        )
        for u in rows
    ]
    return render(request, "users.html", {"users": views})


@router.post(
    "/users/{user_id}/logout", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
def end_sessions(user_id: str, scope: AdminScope, _csrf: CsrfChecked) -> RedirectResponse:
    """End the user's sessions (for the admin's own account: every session but this one)."""
    user = _user(scope, user_id)
    keep = scope.session.id_hash if user.id == scope.session.user_id else None
    with scope.ctx.engine.begin() as conn:
        ended = user_store.end_sessions(conn, user.id, keep=keep)
    scope.record_access("user_logout", target=f"web user {user.id}: {ended} session(s) ended")
    log.info("web user sessions ended: tenant=%s user=%s ended=%d", scope.tenant, user.id, ended)
    return RedirectResponse(f"/users?ended={ended}", status_code=303)


@router.post(
    "/users/{user_id}/remove", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
def remove(user_id: str, scope: AdminScope, _csrf: CsrfChecked) -> RedirectResponse:
    """Delete the user and its sessions; an admin's own account is refused (400)."""
    user = _user(scope, user_id)
    if user.id == scope.session.user_id:
        raise HTTPException(
            status_code=400, detail="You cannot remove yourself: another admin of your tenant can."
        )
    with scope.ctx.engine.begin() as conn:
        user_store.delete_user(conn, user.id)
    scope.record_access("user_remove", target=f"web user {user.id}")
    log.info("web user removed: tenant=%s user=%s", scope.tenant, user.id)
    return RedirectResponse("/users?removed=1", status_code=303)
