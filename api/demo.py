"""``crmhub demo``: bring the embedded default up on one machine and show it working.

Today it runs what exists (see README "Status"): the database migrations, the Temporal dev server
with crmhub's search attributes, and the sandbox Salesforce and HubSpot over HTTPS with seeded
data. Orchestrated syncs join it when the orchestration issue lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from schemas.settings import Settings

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    seconds: float
    temporal_ui: str
    salesforce_url: str
    hubspot_url: str
    salesforce_contacts: int


def run_demo(settings: Settings, console: Console, *, contacts: int, keep_running: bool) -> DemoResult:
    from sandbox.runtime import start_sandbox
    from store.migrate import upgrade
    from workers.devserver import dev_server_status, start_dev_server, stop_dev_server

    started = time.monotonic()
    data_dir = settings.data_dir.resolve()
    with console.status("migrating the database"):
        upgrade(settings.effective_database_url)
    already = dev_server_status(settings).reachable
    with console.status("starting the Temporal dev server"):
        temporal = start_dev_server(settings)
    try:
        with (
            console.status(f"starting the sandbox CRMs and seeding {contacts:,} Salesforce contacts"),
            start_sandbox(
                data_dir,
                host=settings.sandbox.host,
                salesforce_port=0,
                hubspot_port=0,
                seed=settings.sandbox.seed,
                seed_counts={"salesforce": {"Account": 100, "Contact": contacts}},
            ) as sandbox,
        ):
            seconds = time.monotonic() - started
            counts = sandbox.salesforce.store.objects()  # type: ignore[attr-defined]
            result = DemoResult(
                seconds,
                temporal.ui_url,
                sandbox.info.salesforce_url,
                sandbox.info.hubspot_url,
                counts.get("Contact", 0),
            )
            _report(console, result, temporal.search_attributes, sandbox.info.ca_path)
            if keep_running:
                console.print("everything stays up; Ctrl-C to stop")
                from api.cli import wait_for_interrupt

                wait_for_interrupt()
            return result
    finally:
        if not already and not keep_running:
            stop_dev_server(settings)


def _report(console: Console, r: DemoResult, attributes: tuple[str, ...], ca_path: str) -> None:
    table = Table(title=f"crmhub demo: the embedded default is up ({r.seconds:.1f}s)")
    table.add_column("piece")
    table.add_column("where")
    table.add_column("state")
    table.add_row("Temporal dev server", r.temporal_ui, f"search attributes: {', '.join(attributes)}")
    table.add_row("Salesforce sandbox", r.salesforce_url, f"{r.salesforce_contacts:,} contacts seeded")
    table.add_row("HubSpot sandbox", r.hubspot_url, "empty portal, the sync destination")
    console.print(table)
    console.print(f"sandbox CA bundle: {ca_path}")
    console.print(
        "[yellow]not yet built:[/] connectors, governance wiring and the Temporal sync workflow "
        "(issues 3-5); when they land this demo runs a Salesforce → HubSpot sync and prints its lineage."
    )
