"""Syncs: list (instruction version, mapping, schedule, last run, live progress), create, detail with
the run report, and the pause / resume / run-now buttons. Progress comes from the workflow's
``progress`` query (:mod:`api.syncops`); the detail page refreshes itself (meta refresh, no script)
while a run is going. What needs the user — quarantined records, source drift, a refused run with
what to do — comes from the store (:func:`services.syncconfig.sync_health`), and a sync is pointed at
another instruction version with ``POST /syncs/{id}/instruction`` (:func:`services.syncconfig.repoint`)."""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
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
from api.web.tenancy import AdminScope, EditorScope, Scope, TenantScope
from governance.registry import Endpoint
from schemas.errors import ConfigError, CrmhubError, TransientError
from schemas.sync import Progress, SyncMode, SyncStatus
from services.sync_setup import NewSyncRefused, type_family, type_mismatch
from services.syncconfig import SyncHealth, repoint, sync_health
from store.connections import ConnectionInfo, ConnectionRow
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


# ---- new sync: connections → objects → mapping (one server-rendered page, filled in steps) ------------


@dataclass(frozen=True)
class Side:
    """One end of the new sync as the form shows it: the connection, its live objects and where its
    data is hosted (the registry endpoint; ``region_error``: it must be named)."""

    connection: ConnectionInfo  # the public view: no sealed token reaches a template
    streams: list[str]
    endpoint: Endpoint | None
    region_name: str | None
    region_error: str | None


def _side(scope: TenantScope, row: ConnectionRow, field: str, named: str | None) -> Side:
    setup = scope.ctx.sync_setup
    streams = sorted(s.name for s in setup.streams(scope.tenant, row.id))
    try:
        endpoint = setup.region(row, named or None, field)
    except NewSyncRefused as exc:
        return Side(row.info(), streams, None, None, exc.message)
    region = setup.registry.regions.get(endpoint.region)
    return Side(row.info(), streams, endpoint, region.name if region else endpoint.region, None)


def _closest(name: str, choices: list[str]) -> str:
    hits = difflib.get_close_matches(name.casefold(), [c.casefold() for c in choices], n=1, cutoff=0.5)
    return next((c for c in choices if hits and c.casefold() == hits[0]), "")


def _new_sync_page(
    request: Request,
    scope: TenantScope,
    form: dict[str, Any],
    *,
    chosen: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The new-sync page at the step ``form`` reaches: 1 connections, 2 objects (the connections'
    live streams), 3 the mapping editor (:meth:`SyncSetup.draft`); ``error`` above the step it is
    about. ``chosen``: the mapping posted (default: the auto-matched one)."""
    latest = scope.latest_instruction()
    connections = scope.active_connections()
    page: dict[str, Any] = {"connections": connections, "latest": latest, "form": form, "step": 1}
    src_id, dst_id = form.get("source_connection_id"), form.get("destination_connection_id")
    own = {c.id for c in scope.connections()}  # an inactive one is said so by the vendor step
    if (src_id and src_id not in own) or (dst_id and dst_id not in own):  # unknown or another tenant's
        raise HTTPException(status_code=404, detail="no such connection")
    if not src_id and connections:  # the destination defaults to another connection than the source
        first = connections[0]
        others = [c for c in connections[1:] if c.provider != first.provider] or connections[1:]
        page["form"] = {
            **form,
            "source_connection_id": first.id,
            "destination_connection_id": others[0].id if others else first.id,
        }
    if latest is None or not src_id or not dst_id:
        return render(request, "sync_new.html", {**page, "error": error}, status=status)
    setup = scope.ctx.sync_setup
    try:
        source, dest = setup.pair(scope.tenant, src_id, dst_id, bool(form.get("same_connection")))
        page["source"] = _side(scope, source, "source_endpoint", form.get("source_endpoint"))
        page["destination"] = _side(scope, dest, "destination_endpoint", form.get("destination_endpoint"))
    except NewSyncRefused as exc:
        if exc.unknown:
            raise HTTPException(status_code=404, detail="no such connection") from None
        return render(request, "sync_new.html", {**page, "error": error or exc.message}, status=400)
    except CrmhubError as exc:  # the vendor did not answer (token, network): said on the page
        return render(request, "sync_new.html", {**page, "error": error or exc.message}, status=502)
    page["step"] = 2
    if not form.get("source_stream"):
        allowed = [o for o in latest.content.get("allowed_fields", {}) if o in page["source"].streams]
        form = {**form, "source_stream": allowed[0] if allowed else ""}
    if not form.get("destination_stream"):
        form = {**form, "destination_stream": _closest(form["source_stream"], page["destination"].streams)}
    page["form"] = form
    if not form.get("objects_chosen"):
        return render(request, "sync_new.html", {**page, "error": error}, status=status)
    try:
        draft = setup.draft(
            scope.tenant,
            latest.version,
            (source.id, form["source_stream"]),
            (dest.id, form["destination_stream"]),
        )
    except NewSyncRefused as exc:
        return render(request, "sync_new.html", {**page, "error": exc.message}, status=400)
    page["step"] = 3
    page["draft"] = draft
    page["type_mismatch"] = type_mismatch
    page["type_family"] = type_family
    page["chosen"] = draft.suggested() if chosen is None else chosen
    page["pseudonymized"] = set(latest.content.get("pseudonymize", {}).get(form["source_stream"], ()))
    page["unmapped_required"] = draft.unmapped_required(page["chosen"])
    defaults = {
        "sync_id": f"{form['source_stream']}-to-{dest.provider}".lower().replace("_", "-")[:64],
        "source_key_property": draft.source_key or "",
        "destination_id_property": draft.destination_id or "",
    }
    page["form"] = {**defaults, **{k: v for k, v in form.items() if v}}
    return render(request, "sync_new.html", {**page, "error": error}, status=status)


@router.get("/syncs/new", response_class=HTMLResponse, responses=PAGE_RESPONSES)
def new_sync_page(
    request: Request,
    scope: EditorScope,
    source_connection_id: Annotated[str, Query(max_length=64)] = "",
    destination_connection_id: Annotated[str, Query(max_length=64)] = "",
    same_connection: bool = False,
    source_stream: Annotated[str, Query(max_length=128)] = "",
    destination_stream: Annotated[str, Query(max_length=128)] = "",
    objects_chosen: bool = False,
) -> HTMLResponse:
    """The form to create a sync, in steps: pick the connections (the destination must differ
    unless ``same_connection``), then objects from their live streams, then the mapping editor."""
    form = {
        "source_connection_id": source_connection_id,
        "destination_connection_id": destination_connection_id,
        "same_connection": same_connection,
        "source_stream": source_stream.strip(),
        "destination_stream": destination_stream.strip(),
        "objects_chosen": objects_chosen,
    }
    return _new_sync_page(request, scope, form)


@router.post("/syncs", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES)
def create_sync(
    request: Request, scope: EditorScope, _csrf: CsrfChecked, form: Annotated[NewSyncForm, Form()]
) -> Response:
    """Create a sync under the tenant's latest instruction version, after the checks
    ``crmhub sync create`` runs too (:mod:`services.sync_setup`)."""
    latest = scope.latest_instruction()
    error: str | None = None
    chosen: dict[str, str] | None = None
    if latest is None:
        error = "Store a processing instruction first (Instruction page)."
    elif not re.fullmatch(SYNC_ID, form.sync_id):
        error = "The sync id is 1-64 lowercase letters, digits, '-' or '_'."
    else:
        try:
            chosen = form.pairs()
            scope.create_sync(form.spec(scope.tenant, latest.version), same_connection=form.same_connection)
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        except (ValueError, ConfigError) as exc:
            error = exc.message if isinstance(exc, ConfigError) else str(exc)
    if error is not None:
        values = {**form.model_dump(exclude={"mapping"}), "objects_chosen": True}
        return _new_sync_page(request, scope, values, chosen=chosen, error=error, status=400)
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
    scope: AdminScope,
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
    sync_id: str, scope: EditorScope, _csrf: CsrfChecked, mode: Annotated[SyncMode | None, Form()] = None
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
async def pause(sync_id: str, scope: EditorScope, _csrf: CsrfChecked) -> RedirectResponse:
    """Pause the run in progress (it stops between batches)."""
    await _signal(scope, sync_id, "pause")
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


@router.post(
    "/syncs/{sync_id}/resume", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
async def resume(sync_id: str, scope: EditorScope, _csrf: CsrfChecked) -> RedirectResponse:
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
