"""A sync's schedule, edited from the syncs pages (``POST /syncs/{id}/schedule``, CSRF-checked,
tenant-scoped), and one run's page (``/syncs/{id}/runs/{run_id}``): its counts and its dead letters
— the vendor's code and crmhub's redacted reason, never a value (the refused record stays sealed) —
with the retries the product has: "Retry rejected" (``POST /syncs/{id}/retry-rejected``, admin or
editor, CSRF-checked) starts a run that reads each refused record again at the source and pushes
it under the current instruction and mapping (:mod:`workflows.retry`); a full run re-reads every
source record and upserts it again (a quarantined one flows only once fixed at the source)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api import syncops
from api.schedules import parse_interval
from api.web.render import PAGE_RESPONSES, POST_RESPONSES, render
from api.web.routes_syncs import temporal_client
from api.web.session import CsrfChecked
from api.web.tenancy import EditorScope, Scope, TenantScope
from schemas.errors import ConfigError
from store import dead_letters as dead_letter_store
from store import runs as run_store
from store.dead_letters import DeadLetter
from store.runs import RunRow

__all__ = ["router"]

log = logging.getLogger("crmhub.web")
router = APIRouter(tags=["syncs"])

# A run page lists at most this many dead letters (the count above the table is complete).
SHOWN_LETTERS = 500


@router.post(
    "/syncs/{sync_id}/schedule", response_class=RedirectResponse, status_code=303, responses=POST_RESPONSES
)
async def set_schedule(
    sync_id: str,
    scope: EditorScope,
    _csrf: CsrfChecked,
    every: Annotated[str, Form(max_length=16)],
    paused: Annotated[bool, Form()] = False,
    back: Annotated[str, Form(pattern=r"^(list|detail)$")] = "detail",
) -> RedirectResponse:
    """Create or change the sync's schedule: incremental runs every ``every`` (``15m``, ``1h``,
    ``1d``; at least 1 minute), paused or not."""
    await run_in_threadpool(scope.sync, sync_id)  # 404 for another tenant's or an unknown sync
    client, down = await temporal_client(scope)
    if client is None:
        raise HTTPException(status_code=503, detail=f"{down}; the schedule was not changed")
    try:
        interval = parse_interval(every)
        info = await syncops.schedule(
            client,
            scope.tenant,
            sync_id,
            every=interval,
            paused=paused,
            task_queue=scope.ctx.settings.temporal.control_task_queue,
        )
    except ConfigError as exc:
        raise HTTPException(status_code=400, detail=f"Schedule: {exc.message}") from None
    except RPCError:
        raise HTTPException(status_code=503, detail="Temporal refused the schedule change") from None
    log.info(
        "web sync schedule: tenant=%s sync=%s every=%s paused=%s", scope.tenant, sync_id, info.every, paused
    )
    return RedirectResponse("/syncs" if back == "list" else f"/syncs/{sync_id}", status_code=303)


@router.post(
    "/syncs/{sync_id}/retry-rejected",
    response_class=RedirectResponse,
    status_code=303,
    responses=POST_RESPONSES,
)
async def retry_rejected(sync_id: str, scope: EditorScope, _csrf: CsrfChecked) -> RedirectResponse:
    """Start a run that retries every rejected record of the sync (``crmhub sync retry-rejected``);
    400 while a run is in progress, 503 when Temporal is unreachable."""
    await run_in_threadpool(scope.sync, sync_id)  # 404 for another tenant's or an unknown sync
    client, down = await temporal_client(scope)
    if client is None:
        raise HTTPException(status_code=503, detail=f"{down}; nothing was retried")
    try:
        queue = scope.ctx.settings.temporal.control_task_queue
        await syncops.retry_rejected(client, scope.tenant, sync_id, task_queue=queue)
    except ConfigError as exc:
        raise HTTPException(status_code=400, detail=exc.message) from None
    except RPCError:
        raise HTTPException(status_code=503, detail="Temporal refused to start the retry") from None
    log.info("web sync retry-rejected: tenant=%s sync=%s", scope.tenant, sync_id)
    return RedirectResponse(f"/syncs/{sync_id}", status_code=303)


def _run_and_letters(scope: TenantScope, sync_id: str, run_id: str) -> tuple[RunRow, list[DeadLetter], int]:
    scope.sync(sync_id)  # 404 for another tenant's or an unknown sync
    with scope.ctx.engine.connect() as conn:
        run = run_store.get_run(conn, run_id)
        if run is None or run.tenant != scope.tenant or run.sync_id != sync_id:
            raise HTTPException(status_code=404, detail="no such run")
        letters = dead_letter_store.list_dead_letters(
            conn, scope.tenant, sync_id, run_id=run_id, limit=SHOWN_LETTERS
        )
        total = dead_letter_store.count_dead_letters(conn, scope.tenant, sync_id, run_id=run_id)
    return run, letters, total


@router.get("/syncs/{sync_id}/runs/{run_id}", response_class=HTMLResponse, responses=PAGE_RESPONSES)
async def run_page(request: Request, sync_id: str, run_id: str, scope: Scope) -> HTMLResponse:
    """One run: what moved, its dead letters (codes and reasons, never values) and the retry."""
    run, letters, total = await run_in_threadpool(_run_and_letters, scope, sync_id, run_id)
    client, down = await temporal_client(scope)
    by_code = Counter(d.error_code for d in letters)
    quarantined = sum(1 for d in letters if d.error_code == dead_letter_store.QUARANTINED)
    return render(
        request,
        "run.html",
        {
            "sync_id": sync_id,
            "run": run,
            "letters": letters,
            "total": total,
            "by_code": by_code.most_common(),
            "retryable": len(letters) - quarantined,
            "quarantined": quarantined,
            "temporal_down": down if client is None else None,
        },
    )
