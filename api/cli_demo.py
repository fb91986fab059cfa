"""The dev/demo commands: ``crmhub sandbox`` (serve both sandbox CRMs until Ctrl-C) and ``crmhub demo``
(the embedded default end to end, :mod:`api.demo`).

With :mod:`api.demo`, these are the only product modules that import :mod:`sandbox`: the sandbox is
a separate program, and everything else reads what it writes (``<data_dir>/oauth-clients.yaml``)
as ordinary configuration.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from schemas.settings import load_settings

__all__ = ["register", "wait_for_interrupt"]

out = Console()


def register(app: typer.Typer) -> None:
    """Add ``sandbox`` and ``demo`` to ``app``."""
    app.command("sandbox")(sandbox_cmd)
    app.command("demo")(demo_cmd)


# -- sandbox ---------------------------------------------------------------------------------------


def sandbox_cmd(
    contacts: Annotated[
        int | None, typer.Option(help="Salesforce contacts to seed (default from settings)")
    ] = None,
    hubspot_contacts: Annotated[int, typer.Option(help="HubSpot contacts to seed")] = 0,
    companies: Annotated[int, typer.Option(help="Salesforce accounts and HubSpot companies to seed")] = 100,
    salesforce_port: Annotated[int | None, typer.Option(help="0 = any free port")] = None,
    hubspot_port: Annotated[int | None, typer.Option(help="0 = any free port")] = None,
    salesforce_instance: Annotated[
        str, typer.Option(help="the org's instance (Organization.InstanceName): EU44, NA135, UK12 …")
    ] = "EU44",
    hubspot_location: Annotated[
        str, typer.Option(help="the portal's data-hosting location: eu1, na1 …")
    ] = "eu1",
) -> None:
    """Serve the Salesforce and HubSpot emulators over HTTPS on loopback until Ctrl-C."""
    from sandbox.runtime import start_sandbox

    settings = load_settings()
    sb = settings.sandbox
    n = sb.contacts if contacts is None else contacts
    counts = {
        "salesforce": {"Account": companies, "Contact": n},
        "hubspot": {"companies": companies, "contacts": hubspot_contacts},
    }
    started = time.monotonic()
    with start_sandbox(
        settings.data_dir.resolve(),
        host=sb.host,
        salesforce_port=sb.salesforce_port if salesforce_port is None else salesforce_port,
        hubspot_port=sb.hubspot_port if hubspot_port is None else hubspot_port,
        seed=sb.seed,
        seed_counts=counts,
        salesforce_instance=salesforce_instance,
        hubspot_location=hubspot_location,
    ) as running:
        _print_sandbox(running.info, counts, time.monotonic() - started, settings.data_dir.resolve())
        wait_for_interrupt()


def _print_sandbox(info: Any, counts: dict[str, dict[str, int]], took: float, data_dir: Path) -> None:
    from sandbox.runtime import CLIENTS_FILE

    out.print(f"[bold]crmhub sandbox CRMs[/] ready in {took:.1f}s (HTTPS on loopback)")
    for name, url, auth, token, cid, secret, seeded in (
        ("Salesforce", info.salesforce_url, "/services/oauth2/authorize", "/services/oauth2/token",
         info.salesforce_client_id, info.salesforce_client_secret, counts["salesforce"]),
        ("HubSpot", info.hubspot_url, "/oauth/authorize", "/oauth/v1/token",
         info.hubspot_client_id, info.hubspot_client_secret, counts["hubspot"]),
    ):  # fmt: skip
        out.print(f"\n[bold]{name}[/]  {url}", soft_wrap=True)
        out.print(f"  authorize      {url}{auth}", soft_wrap=True)
        out.print(f"  token          {url}{token}", soft_wrap=True)
        out.print(f"  client_id      {cid}", soft_wrap=True)
        out.print(f"  client_secret  {secret}", soft_wrap=True)
        out.print(f"  seeded         {_fmt_counts(seeded)}", soft_wrap=True)
    out.print(f"\nCA bundle (give it to clients; TLS verification stays on): {info.ca_path}", soft_wrap=True)
    out.print(f"redirect URIs registered: {', '.join(info.redirect_uris)}", soft_wrap=True)
    out.print(
        f"crmhub reads these OAuth clients from {data_dir / CLIENTS_FILE} (mode 0600), like any "
        "deployment's clients file: crmhub connect / web / worker on this data_dir need nothing else",
        soft_wrap=True,
    )
    out.print(f"for tests and scripts, control-API tokens too: {data_dir / 'sandbox.json'}", soft_wrap=True)
    out.print("Ctrl-C stops the sandbox.")


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in counts.items() if v) or "empty"


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


# -- demo ------------------------------------------------------------------------------------------


def demo_cmd(
    contacts: Annotated[int | None, typer.Option(help="Salesforce contacts to seed")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="leave everything up")] = False,
) -> None:
    """Run the main job on the embedded default: Temporal, sandbox CRMs, a sync and its lineage."""
    from api.demo import run_demo

    settings = load_settings()
    run_demo(
        settings,
        out,
        contacts=settings.sandbox.contacts if contacts is None else contacts,
        keep_running=keep_running,
    )
