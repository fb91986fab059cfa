"""``crmhub schedules install|list``: crmhub's maintenance Temporal Schedules (retention purge,
key-rotation check, notice dispatch) at the intervals in settings
(``schedules.retention_purge_interval``, ``schedules.key_rotation_check_interval``,
``schedules.notice_dispatch_interval``). Wired by ``register(app)`` from :mod:`api.cli`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console

from api.maintenance import (
    MaintenanceSchedule,
    describe_maintenance_schedules,
    install_maintenance_schedules,
)
from schemas.settings import Settings, load_settings

__all__ = ["register"]

out = Console()

schedules_app = typer.Typer(
    help="Maintenance schedules: retention purge, key-rotation check, notice dispatch (Temporal Schedules).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``schedules`` command group to ``app``."""
    app.add_typer(schedules_app, name="schedules")


async def _run(settings: Settings, *, install: bool) -> list[MaintenanceSchedule]:
    from workers.client import connect

    connected = await connect(settings)
    try:
        if install:
            return await install_maintenance_schedules(connected.client, settings)
        return await describe_maintenance_schedules(connected.client)
    finally:
        connected.engine.dispose()


def _show(rows: list[MaintenanceSchedule], *, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "installed": s.installed,
                        "every_s": s.every.total_seconds() if s.every else None,
                        "overlap": s.overlap,
                        "paused": s.paused,
                        "workflow": s.workflow,
                        "task_queue": s.task_queue,
                        "next_runs": list(s.next_runs),
                        "recent_runs": s.recent_runs,
                    }
                    for s in rows
                ]
            )
        )
        return
    for s in rows:
        if not s.installed:
            out.print(f"schedule {s.id}: [yellow]not installed[/]", soft_wrap=True)
            continue
        out.print(
            f"schedule {s.id}: every {s.every}, overlap {s.overlap}, {'paused' if s.paused else 'active'}; "
            f"starts {s.workflow} on {s.task_queue}; next: {', '.join(s.next_runs[:1]) or '-'}",
            soft_wrap=True,
        )
    if any(not s.installed for s in rows):
        out.print("install them with: crmhub schedules install")


@schedules_app.command("install")
def schedules_install(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Create or update the retention-purge, key-rotation-check and notice-dispatch schedules
    (overlaps skipped)."""
    settings = load_settings()
    _show(asyncio.run(_run(settings, install=True)), as_json=as_json)


@schedules_app.command("list")
def schedules_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Show the maintenance schedules: interval, overlap policy, paused or active, next run."""
    settings = load_settings()
    _show(asyncio.run(_run(settings, install=False)), as_json=as_json)
