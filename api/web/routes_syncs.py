"""Syncs: list (instruction version, mapping, schedule, last run, live progress), create, detail with
the run report, and the pause / resume / run-now buttons. Progress comes from the workflow's
``progress`` query (:mod:`api.syncops`); the detail page refreshes itself (meta refresh, no script)
while a run is going. What needs the user — quarantined records, source drift, a refused run with
what to do — comes from the store (:func:`services.syncconfig.sync_health`), and a sync is pointed at
another instruction version with ``POST /syncs/{id}/instruction`` (:func:`services.syncconfig.repoint`)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from temporalio.client import Client
from temporalio.service import RPCError

from api import syncops
from api.web.forms import NewSyncForm
from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.session import CsrfChecked
from api.web.tenancy import Scope, TenantScope
from schemas.errors import ConfigError, CrmhubError, TransientError
from schemas.sync import Progress, SyncMode, SyncStatus
from services.syncconfig import SyncHealth, repoint, sync_health
from store.syncs import SyncRow

__all__ = ["SyncView", "router", "temporal_client"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["syncs"])

SYNC_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# A query waits for a worker to answer; a page does not wait longer than this for one.
QUERY_TIMEOUT_S = 3.0
NO_ANSWER = (
    "no crmhub worker answered the progress query in time; is a worker running? "
    "(crmhub worker --region <region>)"
)
_ACTIVE = {SyncStatus.RUNNING, SyncStatus.PAUSED, SyncStatus.WAITING}


TEMPORAL_DOWN = "Temporal is unreachable"


@dataclass(frozen=True)
class SyncView:
    """One sync as the pages show it. ``temporal_down``: Temporal could not be reached at all (one
    banner for the page, every button disabled) — unlike ``progress_error``, where Temporal answered
    but no worker did."""

    row: SyncRow
    progress: Progress | None
    progress_error: str | None
    schedule: str
    every: timedelta | None = None
    schedule_paused: bool = False
    temporal_down: bool = False

    @property
    def actions(self) -> tuple[str, ...]:
        """The buttons the sync's state allows: ``pause`` while a run goes, ``resume`` while it is
        paused, else ``run`` (which joins a run no worker reported on); none while Temporal is down."""
        if self.temporal_down:
            return ()
        status = self.progress.status if self.progress is not None else None
        if status is SyncStatus.PAUSED:
            return ("resume",)
        if status in (SyncStatus.RUNNING, SyncStatus.WAITING):
            return ("pause",)
        return ("run",)


async def temporal_client(scope: TenantScope) -> tuple[Client | None, str | None]:
    """The tenant's Temporal client, or None and why (Temporal down is shown, not raised)."""
    try:
        return await scope.ctx.temporal(), None
    except TransientError as exc:
        return None, exc.message


async def _live(scope: TenantScope, row: SyncRow, client: Client | None) -> SyncView:
    """Progress and schedule of one sync from Temporal (``client`` None: Temporal is down)."""
    tenant, sid = scope.tenant, row.spec.id
    if client is None:
        return SyncView(row, None, TEMPORAL_DOWN, "unknown (Temporal unreachable)", temporal_down=True)
    progress: Progress | None = None
    error: str | None = None
    try:
        progress = await asyncio.wait_for(syncops.progress(client, tenant, sid), timeout=QUERY_TIMEOUT_S)
    except TransientError as exc:
        return SyncView(row, None, exc.message, "unknown")
    except (TimeoutError, RPCError):
        error = NO_ANSWER
    try:
        info = await syncops.schedule(client, tenant, sid)
    except ConfigError:
        return SyncView(row, progress, error, "none (runs on demand)")
    except RPCError:
        return SyncView(row, progress, error, "unknown")
    shown = f"every {_interval(info.every)}" + (" (paused)" if info.paused else "")
    return SyncView(row, progress, error, shown, every=info.every, schedule_paused=info.paused)


def _interval(every: timedelta) -> str:
    """``timedelta`` as the form writes it (``15m``, ``1h``, ``1d``)."""
    seconds = int(every.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@router.get("/syncs", response_class=HTMLResponse, responses=PAGE_RESPONSES)
async def syncs_page(request: Request, scope: Scope) -> HTMLResponse:
    """Every sync of the tenant with its live state, its schedule (editable) and the buttons its
    state allows; one banner, and disabled buttons, when Temporal is unreachable."""
    rows = await run_in_threadpool(scope.syncs)
    client, down = await temporal_client(scope)
    views = [await _live(scope, r, client) for r in rows]
    health = {r.spec.id: await run_in_threadpool(_health, scope, r.spec.id) for r in rows}
    return render(
        request,
        "syncs.html",
        {"views": views, "health": health, "active": _ACTIVE, "temporal_down": down, "interval": _interval},
    )


def _health(scope: TenantScope, sync_id: str) -> SyncHealth:
    return sync_health(scope.ctx.engine, scope.tenant, sync_id)


def _new_sync_page(
    request: Request, scope: TenantScope, form: dict[str, Any], error: str | None = None, status: int = 200
) -> HTMLResponse:
    """The new-sync form filled with ``form`` (the values posted, or none), with ``error`` above it."""
    return render(
        request,
        "sync_new.html",
        {
            "connections": scope.active_connections(),
            "latest": scope.latest_instruction(),
            "error": error,
            "form": form,
        },
        status=status,
    )


@router.get("/syncs/new", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def new_sync_page(request: Request, scope: Scope) -> HTMLResponse:
    """The form to create a sync from one connection's object to another's."""
    return _new_sync_page(request, scope, {})


@router.post("/syncs", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES)
def create_sync(
    request: Request, scope: Scope, _csrf: CsrfChecked, form: Annotated[NewSyncForm, Form()]
) -> Response:
    """Create a sync under the tenant's latest instruction version."""
    latest = scope.latest_instruction()
    error: str | None = None
    if latest is None:
        error = "Store a processing instruction first (Instruction page)."
    elif not re.fullmatch(SYNC_ID, form.sync_id):
        error = "The sync id is 1-64 lowercase letters, digits, '-' or '_'."
    else:
        try:
            scope.create_sync(form.spec(scope.tenant, latest.version))
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        except (ValueError, ConfigError) as exc:
            error = exc.message if isinstance(exc, ConfigError) else str(exc)
    if error is not None:
        return _new_sync_page(request, scope, form.model_dump(), error, status=400)
    log.info("web sync created: tenant=%s sync=%s", scope.tenant, form.sync_id)
    return RedirectResponse(f"/syncs/{form.sync_id}", status_code=303)


@router.get("/syncs/{sync_id}", response_class=HTMLResponse, responses=PAGE_RESPONSES)
async def sync_page(request: Request, sync_id: str, scope: Scope) -> HTMLResponse:
    """One sync: live progress (refreshing while it runs), its runs report and lineage summary."""
    row = await run_in_threadpool(scope.sync, sync_id)
    client, down = await temporal_client(scope)
    view = await _live(scope, row, client)
    runs = await run_in_threadpool(scope.runs, sync_id)
    events = await run_in_threadpool(scope.lineage_events)
    by_kind: dict[str, int] = {}
    for e in events:
        by_kind[e.kind.value] = by_kind.get(e.kind.value, 0) + 1
    running = view.progress is not None and view.progress.status in _ACTIVE
    health = await run_in_threadpool(_health, scope, sync_id)
    return render(
        request,
        "sync_detail.html",
        {
            "view": view,
            "runs": runs,
            "lineage": by_kind,
            "lineage_total": len(events),
            "refresh": running,
            "h": health,
            "temporal_down": down,
            "interval": _interval,
        },
    )


@router.post(
    "/syncs/{sync_id}/instruction",
    response_class=RedirectResponse,
    status_code=303,
    responses=POST_RESPONSES,
)
def set_instruction(
    sync_id: str,
    scope: Scope,
    _csrf: CsrfChecked,
    version: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
) -> RedirectResponse:
    """Point the sync at an instruction version (default: the latest), checked to cover every field
    it reads — how a run refused for schema drift resumes once the instruction is re-issued."""
    scope.sync(sync_id)  # 404 for another tenant's or an unknown sync
    target = version
    if target is None:
        latest = scope.latest_instruction()
        if latest is None:
            raise HTTPException(status_code=400, detail="Store a processing instruction first.")
        target = latest.version
    with scope.ctx.engine.begin() as conn:  # a refusal (ConfigError) changes nothing: the error page says why
        repoint(conn, scope.tenant, sync_id, now=datetime.now(UTC), version=target)
    log.info("web sync instruction: tenant=%s sync=%s version=%s", scope.tenant, sync_id, target)
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


async def _signal(scope: TenantScope, sync_id: str, action: str, mode: SyncMode | None = None) -> None:
    await run_in_threadpool(scope.sync, sync_id)  # 404 for another tenant's or an unknown sync
    try:
        client = await scope.ctx.temporal()
        if action == "run":
            queue = scope.ctx.settings.temporal.control_task_queue
            await syncops.start(client, scope.tenant, sync_id, mode=mode, task_queue=queue)
        elif action == "pause":
            await syncops.pause(client, scope.tenant, sync_id)
        else:
            await syncops.resume(client, scope.tenant, sync_id)
    except TransientError as exc:
        raise HTTPException(status_code=503, detail=exc.message) from None
    except CrmhubError as exc:
        raise HTTPException(status_code=400, detail=exc.message) from None
    except RPCError:  # e.g. signalling a run that has finished
        raise HTTPException(
            status_code=400, detail=f"Temporal refused the {action}: no run in progress"
        ) from None
    log.info("web sync %s: tenant=%s sync=%s", action, scope.tenant, sync_id)


@router.post(
    "/syncs/{sync_id}/run", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
async def run_now(
    sync_id: str, scope: Scope, _csrf: CsrfChecked, mode: Annotated[SyncMode | None, Form()] = None
) -> RedirectResponse:
    """Start a run now (or join the one in progress); default mode: incremental once it has a cursor."""
    await _signal(scope, sync_id, "run", mode)
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


async def _client(scope: TenantScope) -> Client:
    try:
        return await scope.ctx.temporal()
    except TransientError as exc:
        raise HTTPException(status_code=503, detail=exc.message) from None


@router.post(
    "/syncs/{sync_id}/pause", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
async def pause(sync_id: str, scope: Scope, _csrf: CsrfChecked) -> RedirectResponse:
    """Pause the run in progress (it stops between batches)."""
    await _signal(scope, sync_id, "pause")
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


@router.post(
    "/syncs/{sync_id}/resume", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
async def resume(sync_id: str, scope: Scope, _csrf: CsrfChecked) -> RedirectResponse:
    """Resume a paused run."""
    await _signal(scope, sync_id, "resume")
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


@router.get(
    "/api/syncs/{sync_id}/progress",
    response_model=Progress | None,
    responses={
        303: {"description": "not logged in"},
        400: {"description": "the URL contains a NUL byte"},
        404: {"description": "no such sync"},
        503: {"description": "Temporal unreachable"},
    },
)
async def progress_json(sync_id: str, scope: Scope) -> Progress | None:
    """The latest run's progress as JSON (null if the sync never ran)."""
    await run_in_threadpool(scope.sync, sync_id)
    client = await _client(scope)
    try:
        return await asyncio.wait_for(
            syncops.progress(client, scope.tenant, sync_id), timeout=QUERY_TIMEOUT_S
        )
    except TransientError as exc:
        raise HTTPException(status_code=503, detail=exc.message) from None
    except (TimeoutError, RPCError):
        raise HTTPException(status_code=503, detail=NO_ANSWER) from None
