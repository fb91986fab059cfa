"""Ops endpoints: ``/healthz`` (the process answers), ``/readyz`` (database reachable, migrations
current, Temporal reachable; 503 naming what is not) and ``/metrics`` (Prometheus text format; only
with ``web.metrics_token`` as a bearer token, or when that is unset only from loopback: 404 else, so
the endpoint is not advertised)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api.web.context import WebContext
from api.web.guards import metrics_allowed
from schemas.errors import TransientError
from store.migrate import is_current

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _database(ctx: WebContext) -> tuple[bool, bool]:
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any driver error means "not reachable"; the message may hold the URL
        return False, False
    return True, is_current(ctx.settings.effective_database_url)


@router.get("/readyz", responses={503: {"description": "not ready: the body names the failing check"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: database reachable, its migrations current, Temporal reachable."""
    ctx: WebContext = request.app.state.web
    db_ok, migrated = await run_in_threadpool(_database, ctx)
    try:
        client = await ctx.temporal()
        temporal_ok = await client.service_client.check_health(timeout=timedelta(seconds=3))
    except (TransientError, RPCError, RuntimeError):
        temporal_ok = False
    checks: dict[str, Any] = {"database": db_ok, "migrations": migrated, "temporal": temporal_ok}
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        404: {"description": "no metrics token sent (web.metrics_token), or not from loopback"},
    },
)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics of this web process (logins, OAuth connects, responses by status class)."""
    ctx: WebContext = request.app.state.web
    if not metrics_allowed(request, ctx.settings.web):
        raise HTTPException(status_code=404, detail="Not Found")
    return PlainTextResponse(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
