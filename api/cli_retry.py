"""``crmhub sync retry-rejected``: retry a sync's rejected records now — each is read again at the
source by id, governed under the sync's current instruction and mapping, and pushed; the run then
reports how many were retried, resolved (accepted, or gone at the source) and refused again
(:mod:`workflows.retry`). Records whose mapping or instruction changed are retried by the next run
on their own; this is for the others (e.g. after a fix at the destination)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from temporalio.client import Client

from api import syncops
from api.cli_common import require_tenant
from api.cli_sync import EXIT_FAILED, follow, sync_app
from schemas.settings import Settings, load_settings
from schemas.sync import Progress, SyncStatus

__all__ = ["register"]

out = Console()


def register() -> None:
    """Add ``retry-rejected`` to the ``crmhub sync`` commands."""
    sync_app.command("retry-rejected")(sync_retry_rejected)


def sync_retry_rejected(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run until it ends")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Start a run that retries every rejected record of the sync (at most
    worker.retry_rejected_per_run a run; the rest with the next runs)."""
    settings = load_settings()
    result = asyncio.run(_run(settings, tenant, sync, wait=wait, quiet=as_json))
    if as_json:
        out.print_json(result.model_dump_json() if result is not None else "null")
    elif result is not None:
        c = result.counts
        out.print(
            f"run {result.run_id}: {result.status.value} · retried {c.retried:,} · resolved "
            f"{c.retry_resolved:,} (gone at the source {c.retry_gone:,}) · refused again "
            f"{max(c.retried - c.retry_resolved - c.skipped, 0):,} · pushed {c.pushed:,}",
            soft_wrap=True,
        )
    if result is not None and result.status not in (SyncStatus.COMPLETED, SyncStatus.RUNNING):
        raise typer.Exit(EXIT_FAILED)


async def _run(settings: Settings, tenant: str, sync: str, *, wait: bool, quiet: bool) -> Progress | None:
    from workers.client import connect

    connected = await connect(settings)
    try:
        require_tenant(connected.engine, tenant)
        client: Client = connected.client
        queue = settings.temporal.control_task_queue
        handle = await syncops.retry_rejected(client, tenant, sync, task_queue=queue)
        if not wait:
            return await syncops.progress(client, tenant, sync)
        return await follow(client, tenant, sync, handle, quiet=quiet)
    finally:
        connected.engine.dispose()
