"""``crmhub sync reconcile``: compare a sync's source ids with what it mapped at the destination and
delete there what vanished without a readable delete (:mod:`workflows.reconcile`), following the
reconciliation with a progress line; or schedule it (``--every``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli_common import require_tenant
from api.cli_sync import EXIT_FAILED, sync_app
from api.schedules import parse_interval
from schemas.reconcile import ReconcileOutcome, ReconcileProgress, ReconcileResult
from schemas.settings import Settings, load_settings

__all__ = ["register"]

out = Console()

_NOT_DONE = {ReconcileOutcome.INCOMPLETE, ReconcileOutcome.REFUSED, ReconcileOutcome.UNSUPPORTED,
             ReconcileOutcome.FAILED}  # fmt: skip


def register() -> None:
    """Add ``reconcile`` to the ``crmhub sync`` commands."""
    sync_app.command("reconcile")(sync_reconcile)


def sync_reconcile(
    tenant: Annotated[str, typer.Option(help="tenant id")],
    sync: Annotated[str, typer.Option(help="sync id")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what vanished; delete nothing")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="delete even above worker.reconcile_max_delete_fraction")
    ] = False,
    every: Annotated[
        str | None, typer.Option(help="instead: schedule a reconciliation every 1d, 12h … (at most hourly)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Find records deleted at the source without a readable delete (a purged recycle bin, a GDPR
    delete) by listing every source id, and delete them at the destination."""
    settings = load_settings()
    if every is not None:
        sid, runs = asyncio.run(_schedule(settings, tenant, sync, every))
        out.print(
            f"reconciliation schedule {sid}: every {parse_interval(every)}; next: {', '.join(runs) or '-'}"
        )
        return
    result = asyncio.run(_run(settings, tenant, sync, dry_run=dry_run, force=force, quiet=as_json))
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        _print(result)
    if result.outcome in _NOT_DONE:
        raise typer.Exit(EXIT_FAILED)


async def _schedule(settings: Settings, tenant: str, sync: str, every: str) -> tuple[str, tuple[str, ...]]:
    from api import reconcileops
    from workers.client import connect

    connected = await connect(settings)
    try:
        require_tenant(connected.engine, tenant)
        return await reconcileops.schedule(
            connected.client,
            tenant,
            sync,
            parse_interval(every),
            task_queue=settings.temporal.control_task_queue,
        )
    finally:
        connected.engine.dispose()


async def _run(settings: Settings, tenant: str, sync: str, *, dry_run: bool, force: bool, quiet: bool) -> Any:
    from temporalio.client import WorkflowFailureError

    from api import reconcileops
    from workers.client import connect

    connected = await connect(settings)
    try:
        require_tenant(connected.engine, tenant)
        handle = await reconcileops.start(
            connected.client,
            tenant,
            sync,
            dry_run=dry_run,
            force=force,
            task_queue=settings.temporal.control_task_queue,
        )
        done = asyncio.ensure_future(handle.result())
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[phase]}"),
            TextColumn("{task.fields[line]}"),
            TimeElapsedColumn(),
            console=out,
            disable=quiet,
        ) as bar:
            task = bar.add_task("reconcile", total=None, phase="planning", line="")
            while not done.done():
                with contextlib.suppress(Exception):  # a query while no worker polls: ask again
                    p: ReconcileProgress | None = await reconcileops.progress(handle)
                    if p is not None:
                        line = f"listed {p.listed:,} ids · {p.list_pages:,} pages · {p.list_calls:,} calls"
                        bar.update(task, phase=p.phase, line=line)
                await asyncio.wait({done}, timeout=0.5)
        try:
            result: ReconcileResult = await done
        except WorkflowFailureError as exc:
            cause: BaseException | None = exc.cause
            while getattr(cause, "cause", None) is not None:
                cause = getattr(cause, "cause", None)
            return ReconcileResult(outcome=ReconcileOutcome.FAILED, message=str(cause))
        return result
    finally:
        connected.engine.dispose()


def _print(r: ReconcileResult) -> None:
    table = Table(title=f"reconciliation: {r.outcome.value}")
    for name in ("listed", "mapped", "vanished", "deleted", "kept", "failed", "list calls", "delete calls"):
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:,}" for v in (r.listed, r.mapped, r.vanished, r.deleted, r.kept, r.failed,
                                       r.list_calls, r.delete_calls)))  # fmt: skip
    out.print(table)
    colour = "red" if r.outcome in _NOT_DONE else "green"
    out.print(f"[{colour}]{r.outcome.value}:[/] {r.message}", soft_wrap=True)
