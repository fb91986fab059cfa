"""The dashboard: connections, syncs and the instruction in force at a glance."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.web.render import PAGE_RESPONSES, render
from api.web.tenancy import Scope
from store.connections import ConnectionStatus

__all__ = ["router"]

router = APIRouter(tags=["pages"])


@router.get("/", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def dashboard(request: Request, scope: Scope) -> HTMLResponse:
    """What is connected, what syncs exist, which instruction version is in force."""
    connections = scope.connections()
    return render(
        request,
        "dashboard.html",
        {
            "org": scope.tenant_row(),
            "email": scope.user_email(),
            "connections": connections,
            "needs_reauth": [c for c in connections if c.status is ConnectionStatus.REAUTHORIZATION_REQUIRED],
            "syncs": scope.syncs(),
            "latest": scope.latest_instruction(),
        },
    )
