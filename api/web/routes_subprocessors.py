"""The tenant's view of the versioned subprocessor registry (Art. 28(2)): the version its syncs run
under, every version with its objection window, and — while a proposed version's window is open —
the admin's objection form (keep running on the old set, or stop the syncs). An objection goes
through :func:`services.subprocessor_changes.object_to` like ``crmhub subprocessors object``, so it
is recorded and a ``registry`` ledger event (``by=web:<user id>``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.session import CsrfChecked
from api.web.tenancy import AdminScope, Scope, TenantScope
from governance.registry_versions import effective_registry
from schemas.errors import ConfigError
from services.subprocessor_changes import object_to
from services.wiring import subprocessor_registry
from store import subprocessor_versions as version_store
from store.subprocessor_versions import ObjectionChoice

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["subprocessors"])


@router.get("/subprocessors", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def subprocessors_page(request: Request, scope: Scope) -> HTMLResponse:
    """Versions, the tenant's objections and effective version, and the objection form."""
    return _page(request, scope)


def _page(
    request: Request, scope: TenantScope, *, error: str | None = None, status: int = 200
) -> HTMLResponse:
    now = datetime.now(UTC)
    with scope.ctx.engine.connect() as conn:
        versions = version_store.list_versions(conn)
        objections = {o.version: o for o in version_store.list_objections(conn, tenant=scope.tenant)}
        effective = effective_registry(conn, subprocessor_registry(scope.ctx.settings), scope.tenant)
    open_ = [
        v for v in versions if v.applied is None and now < v.window_closes and v.version not in objections
    ]
    return render(
        request,
        "subprocessors.html",
        {
            "versions": list(reversed(versions)),
            "objections": objections,
            "effective": effective,
            "open_versions": open_,
            "error": error,
        },
        status=status,
    )


@router.post(
    "/subprocessors/object", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
def object_version(
    request: Request,
    scope: AdminScope,
    _csrf: CsrfChecked,
    version: Annotated[int, Form(ge=2, le=2**31 - 1)],
    choice: Annotated[Literal["keep", "stop"], Form()],
) -> Response:
    """Record the tenant's objection to the proposed ``version`` with its ``choice``."""
    try:
        object_to(
            scope.ctx.engine, scope.tenant, version, ObjectionChoice(choice),
            by=f"web:{scope.session.user_id}", now=datetime.now(UTC),
        )  # fmt: skip
    except ConfigError as exc:
        return _page(request, scope, error=exc.message, status=400)
    log.info("web subprocessor objection: tenant=%s version=%s choice=%s", scope.tenant, version, choice)
    return RedirectResponse(f"/subprocessors?objected={version}", status_code=303)
